/*
 * pgsink.c: the Postgres sink (see pgsink.h, docs/ARCHITECTURE.md section 7).
 *
 * Design note
 * -----------
 * One loop thread. A batch is the records polled since the last flush, at
 * most pg.sink.batch.rows of them, or whatever arrived within
 * pg.sink.linger.ms. A flush is ONE Postgres transaction:
 *
 *   BEGIN
 *   COPY messages FROM STDIN (FORMAT binary)   (direct: deduplicated in C)
 *   COPY sluice_stage_users FROM STDIN          (temp table, text format)
 *   INSERT INTO users SELECT DISTINCT ON (id) ... FROM stage
 *          ORDER BY ... ON CONFLICT ...         (idempotent upsert)
 *   UPDATE sluice_sink_offsets SET next_offset = <new>
 *          WHERE ... AND next_offset = <what we believe is stored>
 *   (produce the batch's dead letters and wait for their delivery)
 *   COMMIT
 *
 * Messages take the direct path (write_messages_direct): the batch is
 * deduplicated in C (dedupe_messages: the last record of a (dialog_id,
 * sequence) wins) and COPYed in binary straight into the table, with no
 * stage, sort or speculative insertion; profiling showed the staged INSERT
 * ... SELECT DISTINCT ON ... ON CONFLICT taking ~75% of a batch. A plain
 * COPY fails on a key that is already there, and so does a row Postgres
 * refuses: the transaction is then rolled back and the batch redone through
 * the stages (ON CONFLICT DO NOTHING for messages, which are immutable), so
 * the result is the same as before, only slower; the next
 * DIRECT_SKIP_BATCHES batches stay on the stages, so a topic full of
 * repeats costs one failed COPY per that many batches. Users (few, and
 * upserted with DO UPDATE) always take the stage.
 *
 * Invariants:
 *   I1  Postgres holds the truth about the sink's position: the rows of
 *       offsets < next_offset are in the tables, those >= are not (replays
 *       change nothing either way, since the upserts are idempotent).
 *   I2  After any failure whose outcome is unknown (connection lost, even
 *       during COMMIT) the sink drops its batch and re-reads its offsets
 *       from Postgres before consuming again (resync), never from the
 *       group's committed offsets, which are written only for monitoring.
 *   I3  The offsets UPDATE is conditional on the value this process last
 *       read or wrote: another writer (a zombie instance, a rebuild's swap)
 *       makes it affect no row, the transaction rolls back, and the sink
 *       resyncs (fencing in Postgres).
 *   I4  A record is accepted only if its offset >= the partition's
 *       pending_next, so nothing is batched twice; seeks wait until the
 *       fetcher has dropped pre-fetched records (rd_kafka_seek_partitions
 *       with a timeout).
 *
 * States (sl_pgsink_state):
 *
 *   STARTING --pg_connect ok--> RUNNING / REBUILDING
 *   RUNNING --write fails for a non-data reason (pg_failed)--> PAUSED
 *       every assigned partition paused, batch dropped, consumer still
 *       polled (group membership kept), reconnect with exponential backoff
 *   PAUSED --pg_connect ok, resync (offsets from PG, seek, resume)--> RUNNING
 *   REBUILDING --all partitions at end, batch flushed, swap_tables--> RUNNING
 *
 * A batch that Postgres rejects for its data (SQLSTATE class 22 or 23) on
 * the staged path is retried in a new transaction by bisection under
 * savepoints
 * (write_range): halves that pass stay, a single row that fails goes to the
 * dead-letter topic with the SQL error. Records that do not decode go there
 * too. Dead letters are produced before COMMIT, so they are at-least-once
 * (a crash between the two re-sends them; the headers name topic,
 * partition and offset, so a reader can deduplicate).
 */
#include "connectors/postgres/sink.h"
#include "processor/base/clock.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "processor/kafka/admin.h"
#include "processor/base/arena.h"
#include "processor/http/server.h"
#include "processor/kafka/client.h"
#include "processor/base/metrics.h"
#include "processor/http/metrics.h"
#include "sluice/v1/dialogs.pb-c.h"
#include "sluice/v1/identity.pb-c.h"

#define COMPONENT           "pgsink"
#define MAX_PARTITIONS      1024        /* per input topic */
#define ARENA_CAP           (64u << 20) /* decoded events of one batch */
#define COPY_BUF_CAP        ((size_t)512 << 20)
#define SEEK_TIMEOUT_MS     10000
#define DIRECT_SKIP_BATCHES 16 /* staged batches after a direct COPY failed */
#define ADMIN_TIMEOUT       10000
#define MIGRATION_LOCK      "7400312645101" /* pg_advisory_lock key: "sluice" schema */

enum { T_USERS, T_MESSAGES, N_TOPICS };
static const char *const default_tables[N_TOPICS] = {"users", "messages"};
static const char *const rebuild_tables[N_TOPICS] = {"users_rebuild", "messages_rebuild"};

struct sl_pg_migration {
    const char *name;
    const char *sql;
};
extern const struct sl_pg_migration sl_pg_migrations[]; /* generated from schemas/postgres */

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

/* ---- small helpers ------------------------------------------------------ */

#define LOG(sink, level, ...) sl_log(&(sink)->logger, level, COMPONENT, __VA_ARGS__)

const char *sl_pgsink_state_name(sl_pgsink_state state) {
    switch (state) {
    case SL_PGSINK_STARTING:
        return "starting";
    case SL_PGSINK_RUNNING:
        return "running";
    case SL_PGSINK_PAUSED_FOR_POSTGRES:
        return "paused_for_postgres";
    case SL_PGSINK_REBUILDING:
        return "rebuilding";
    }
    return "unknown";
}

static void set_state(sl_pgsink *sink, sl_pgsink_state state) {
    atomic_store(&sink->state, (int)state);
    for (int i = 0; i < 4; i++)
        sl_gauge_set(sink->m.state[i], i == (int)state ? 1 : 0);
}

sl_pgsink_state sl_pgsink_state_get(const sl_pgsink *sink) {
    return (sl_pgsink_state)atomic_load(&((sl_pgsink *)sink)->state);
}

static bool buf_reserve(buf *b, size_t more) {
    if (b->len + more <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 65536;
    while (cap < b->len + more)
        cap *= 2;
    if (cap > COPY_BUF_CAP)
        return false;
    char *data = realloc(b->data, cap);
    if (!data)
        return false;
    b->data = data;
    b->cap = cap;
    return true;
}

static bool buf_put(buf *b, const char *s, size_t n) {
    if (!buf_reserve(b, n))
        return false;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    return true;
}

/* One COPY text-format field: backslash, newline, carriage return and tab
 * are escaped; everything else (including invalid UTF-8, which Postgres
 * then refuses for that row) goes as is. protobuf-c strings end at their
 * first NUL, so a field never holds one (see decode_checked). */
static bool buf_field(buf *b, const char *s, char sep) {
    size_t n = strlen(s);
    if (!buf_reserve(b, 2 * n + 1))
        return false;
    char *out = b->data + b->len;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        switch (c) {
        case '\\':
            *out++ = '\\';
            *out++ = '\\';
            break;
        case '\n':
            *out++ = '\\';
            *out++ = 'n';
            break;
        case '\r':
            *out++ = '\\';
            *out++ = 'r';
            break;
        case '\t':
            *out++ = '\\';
            *out++ = 't';
            break;
        default:
            *out++ = c;
        }
    }
    *out++ = sep;
    b->len = (size_t)(out - b->data);
    return true;
}

/* COPY BINARY pieces, in network byte order. */
static bool buf_be(buf *b, uint64_t v, size_t bytes) {
    if (!buf_reserve(b, bytes))
        return false;
    for (size_t i = 0; i < bytes; i++)
        b->data[b->len + i] = (char)(v >> (8 * (bytes - 1 - i)));
    b->len += bytes;
    return true;
}

/* A binary text field: length, then the bytes as they are. Postgres checks
 * the encoding (invalid UTF-8 is refused for the row, as in text format);
 * protobuf-c strings never hold a NUL (see decode_record). */
static bool buf_bin_text(buf *b, const char *s) {
    size_t n = strlen(s);
    return n <= INT32_MAX && buf_be(b, n, 4) && buf_put(b, s, n);
}

static bool buf_bin_int8(buf *b, int64_t v) {
    return buf_be(b, 8, 4) && buf_be(b, (uint64_t)v, 8);
}

/* timestamptz on the wire: microseconds since 2000-01-01 00:00:00 UTC, exact
 * from the event's milliseconds. A value beyond Postgres' range (or one
 * whose microseconds do not fit in 64 bits) is sent as one Postgres refuses
 * ("timestamp out of range", class 22): never as +-infinity, which are
 * INT64_MAX and INT64_MIN on the wire. */
static bool buf_bin_timestamptz_ms(buf *b, int64_t unix_ms) {
    const int64_t pg_epoch_ms = 946684800000LL;
    const int64_t limit_ms = INT64_MAX / 1000 - pg_epoch_ms;
    int64_t us = unix_ms > limit_ms    ? INT64_MAX - 1
                 : unix_ms < -limit_ms ? INT64_MIN + 1
                                       : (unix_ms - pg_epoch_ms) * 1000;
    return buf_bin_int8(b, us);
}

static bool buf_int(buf *b, long long v, char sep) {
    char tmp[32];
    int n = snprintf(tmp, sizeof(tmp), "%lld%c", v, sep);
    return buf_put(b, tmp, (size_t)n);
}

/* ---- Postgres ------------------------------------------------------------ */

/* Classify a failed result (res may be NULL: the connection failed). Fills
 * why with the server's message (never a DSN). */
static pg_res pg_classify(PGconn *conn, const PGresult *res, char *why, size_t why_size) {
    /* SQLSTATE and the primary message only: DETAIL may quote the row
     * ("Failing row contains ..."), and payloads never reach logs. */
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *code = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = PQerrorMessage(conn);
    if (primary)
        snprintf(why, why_size, "%s (SQLSTATE %s)", primary, code ? code : "?");
    else
        snprintf(why, why_size, "%s", msg && *msg ? msg : "unknown Postgres error");
    size_t n = strlen(why);
    while (n > 0 && (why[n - 1] == '\n' || why[n - 1] == ' '))
        why[--n] = '\0';
    for (char *p = why; *p; p++)
        if (*p == '\n')
            *p = ' ';
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (PQstatus(conn) == CONNECTION_OK && state &&
        (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0))
        return PG_DATA;
    return PG_RETRY;
}

static pg_res pg_run(PGconn *conn, const char *sql, int n_params, const char *const *params,
                     char *why, size_t why_size) {
    PGresult *res = n_params ? PQexecParams(conn, sql, n_params, NULL, params, NULL, NULL, 0)
                             : PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    pg_res r = PG_OK;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        r = pg_classify(conn, res, why, why_size);
    PQclear(res);
    return r;
}

/* libpq prints NOTICEs to stderr by default; library code never prints. */
static void ignore_notice(void *arg, const char *message) {
    (void)arg;
    (void)message;
}

/* libpq connection with a bounded connect time; the user's DSN wins for every
 * key it sets. NULL + why on failure. */
static PGconn *pg_open(const char *dsn, char *why, size_t why_size) {
    const char *keys[] = {"connect_timeout", "application_name", "dbname", NULL};
    const char *values[] = {"5", "sluice-pgsink", dsn, NULL};
    PGconn *conn = PQconnectdbParams(keys, values, 1);
    if (!conn) {
        snprintf(why, why_size, "out of memory");
        return NULL;
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        pg_classify(conn, NULL, why, why_size);
        PQfinish(conn);
        return NULL;
    }
    PQsetNoticeProcessor(conn, ignore_notice, NULL);
    return conn;
}

sl_err sl_pgsink_migrate(const char *dsn, const sl_logger *logger, int *applied, char *errstr,
                         size_t errstr_size) {
    char why[512];
    if (applied)
        *applied = 0;
    PGconn *conn = pg_open(dsn, why, sizeof(why));
    if (!conn)
        return sl_fail(errstr, errstr_size, SL_ERR_IO, "postgres: %s", why);
    sl_err err = SL_OK;
    const char *lock_params[] = {MIGRATION_LOCK};
    /* A session-level lock: concurrent sinks apply migrations one at a time,
     * and a crash releases it with the connection. */
    if (pg_run(conn, "SELECT pg_advisory_lock($1::bigint)", 1, lock_params, why, sizeof(why)) ||
        pg_run(conn,
               "CREATE TABLE IF NOT EXISTS sluice_schema_version ("
               "version int PRIMARY KEY, name text NOT NULL, "
               "applied_at timestamptz NOT NULL DEFAULT now())",
               0, NULL, why, sizeof(why))) {
        err = sl_fail(errstr, errstr_size, SL_ERR_IO, "postgres: migrations: %s", why);
        goto done;
    }
    for (const struct sl_pg_migration *mig = sl_pg_migrations; mig->name; mig++) {
        char version[16];
        snprintf(version, sizeof(version), "%ld", strtol(mig->name, NULL, 10));
        const char *params[] = {version, mig->name};
        PGresult *res = PQexecParams(conn, "SELECT 1 FROM sluice_schema_version WHERE version = $1",
                                     1, NULL, params, NULL, NULL, 0);
        bool ok = PQresultStatus(res) == PGRES_TUPLES_OK, done_before = ok && PQntuples(res) > 0;
        if (!ok)
            pg_classify(conn, res, why, sizeof(why));
        PQclear(res);
        if (!ok) {
            err = sl_fail(errstr, errstr_size, SL_ERR_IO, "postgres: migrations: %s", why);
            goto done;
        }
        if (done_before)
            continue;
        if (pg_run(conn, "BEGIN", 0, NULL, why, sizeof(why)) ||
            pg_run(conn, mig->sql, 0, NULL, why, sizeof(why)) ||
            pg_run(conn, "INSERT INTO sluice_schema_version (version, name) VALUES ($1, $2)", 2,
                   params, why, sizeof(why)) ||
            pg_run(conn, "COMMIT", 0, NULL, why, sizeof(why))) {
            char ignored[64];
            pg_run(conn, "ROLLBACK", 0, NULL, ignored, sizeof(ignored));
            err = sl_fail(errstr, errstr_size, SL_ERR_IO, "postgres: migration %s: %s", mig->name,
                          why);
            goto done;
        }
        sl_log(logger, SL_LOG_INFO, COMPONENT, "applied migration %s", mig->name);
        if (applied)
            (*applied)++;
    }
done:
    pg_run(conn, "SELECT pg_advisory_unlock($1::bigint)", 1, lock_params, why, sizeof(why));
    PQfinish(conn);
    return err;
}

/* Stage tables live as long as the connection; ON COMMIT DELETE ROWS empties
 * them at every commit. */
static const char stage_ddl[] =
    "CREATE TEMP TABLE sluice_stage_users (id text, email text, first_name text, "
    "second_name text, birthdate text, biography text, city text, created_at_ms bigint, "
    "src_partition int, src_offset bigint) ON COMMIT DELETE ROWS;"
    "CREATE TEMP TABLE sluice_stage_messages (dialog_id text, sequence bigint, sender_id text, "
    "recipient_id text, text text, sent_at_ms bigint, src_partition int, src_offset bigint) "
    "ON COMMIT DELETE ROWS";

static void pg_close(sl_pgsink *sink) {
    if (sink->pg)
        PQfinish(sink->pg);
    sink->pg = NULL;
}

static void pause_all(sl_pgsink *sink, bool pause) {
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(16);
    for (int t = 0; t < N_TOPICS; t++)
        for (int p = 0; p < MAX_PARTITIONS; p++)
            if (sink->parts[t][p].assigned)
                rd_kafka_topic_partition_list_add(list, sink->topics[t], p);
    if (list->cnt > 0 && sink->consumer) {
        if (pause)
            rd_kafka_pause_partitions(sink->consumer, list);
        else
            rd_kafka_resume_partitions(sink->consumer, list);
    }
    rd_kafka_topic_partition_list_destroy(list);
}

static void batch_clear(sl_pgsink *sink);

/* Postgres failed for a reason other than the data: drop the batch, pause,
 * retry with exponential backoff. Logs once per state change. */
static void pg_failed(sl_pgsink *sink, const char *why) {
    pg_close(sink);
    batch_clear(sink);
    sl_counter_add(sink->m.pg_failures, 1);
    int64_t now = sl_clock_mono_ms();
    if (sl_pgsink_state_get(sink) != SL_PGSINK_PAUSED_FOR_POSTGRES) {
        LOG(sink, SL_LOG_WARN,
            "postgres unavailable (%s): consumption paused, retrying with backoff", why);
        sink->paused_since_ms = now;
        sink->backoff_ms = sink->backoff_min_ms;
        set_state(sink, SL_PGSINK_PAUSED_FOR_POSTGRES);
        pause_all(sink, true);
    } else {
        sink->backoff_ms = sink->backoff_ms * 2 > sink->backoff_max_ms ? sink->backoff_max_ms
                                                                       : sink->backoff_ms * 2;
    }
    snprintf(sink->last_pg_error, sizeof(sink->last_pg_error), "%s", why);
    sink->pg_retry_at_ms = now + sink->backoff_ms;
    sink->need_resync = true;
}

/* Try to (re)connect; on success the caller resyncs. */
static bool pg_connect(sl_pgsink *sink) {
    char why[512];
    PGconn *conn = pg_open(sink->dsn, why, sizeof(why));
    if (conn && pg_run(conn, stage_ddl, 0, NULL, why, sizeof(why)) != PG_OK) {
        PQfinish(conn);
        conn = NULL;
    }
    if (!conn) {
        pg_failed(sink, why);
        return false;
    }
    sink->pg = conn;
    if (sl_pgsink_state_get(sink) == SL_PGSINK_PAUSED_FOR_POSTGRES) {
        LOG(sink, SL_LOG_INFO,
            "postgres is back after %.1f s: resuming from the offsets stored there",
            (double)(sl_clock_mono_ms() - sink->paused_since_ms) / 1000.0);
    } else {
        LOG(sink, SL_LOG_INFO, "connected to postgres %s:%s/%s", PQhost(conn), PQport(conn),
            PQdb(conn));
    }
    set_state(sink, sink->mode == SL_PGSINK_REBUILD ? SL_PGSINK_REBUILDING : SL_PGSINK_RUNNING);
    sink->need_resync = true;
    return true;
}

/* Read the stored offsets of the sink's group into parts[].committed_next
 * (for every partition; -1 when there is no row). */
static pg_res load_offsets(sl_pgsink *sink, char *why, size_t why_size) {
    const char *params[] = {sink->offsets_group};
    PGresult *res = PQexecParams(sink->pg,
                                 "SELECT topic, partition, next_offset FROM sluice_sink_offsets "
                                 "WHERE group_id = $1",
                                 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        pg_res r = pg_classify(sink->pg, res, why, why_size);
        PQclear(res);
        return r == PG_OK ? PG_RETRY : r;
    }
    for (int t = 0; t < N_TOPICS; t++)
        for (int p = 0; p < MAX_PARTITIONS; p++)
            sink->parts[t][p].committed_next = -1;
    for (int i = 0; i < PQntuples(res); i++) {
        long p = strtol(PQgetvalue(res, i, 1), NULL, 10);
        for (int t = 0; t < N_TOPICS; t++)
            if (strcmp(PQgetvalue(res, i, 0), sink->topics[t]) == 0 && p >= 0 && p < MAX_PARTITIONS)
                sink->parts[t][p].committed_next = strtoll(PQgetvalue(res, i, 2), NULL, 10);
    }
    PQclear(res);
    return PG_OK;
}

static int64_t start_offset(const part_state *ps) {
    return ps->committed_next >= 0 ? ps->committed_next : RD_KAFKA_OFFSET_BEGINNING;
}

/* I2: drop the batch, read the offsets from Postgres, seek every assigned
 * partition there (waiting until pre-fetched records are purged), resume. */
static void resync(sl_pgsink *sink) {
    char why[512];
    batch_clear(sink);
    pg_res r = load_offsets(sink, why, sizeof(why));
    if (r != PG_OK) {
        pg_failed(sink, why);
        return;
    }
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(16);
    for (int t = 0; t < N_TOPICS; t++)
        for (int p = 0; p < MAX_PARTITIONS; p++) {
            part_state *ps = &sink->parts[t][p];
            ps->pending_next = ps->committed_next;
            ps->eof = false;
            if (ps->assigned)
                rd_kafka_topic_partition_list_add(list, sink->topics[t], p)->offset =
                    start_offset(ps);
        }
    bool ok = true;
    if (list->cnt > 0) {
        rd_kafka_error_t *error = rd_kafka_seek_partitions(sink->consumer, list, SEEK_TIMEOUT_MS);
        if (error) {
            LOG(sink, SL_LOG_WARN, "seek after resync failed (%s); retrying",
                rd_kafka_error_string(error));
            rd_kafka_error_destroy(error);
            ok = false;
        }
        for (int i = 0; ok && i < list->cnt; i++)
            if (list->elems[i].err) {
                LOG(sink, SL_LOG_WARN, "seek %s [%d] failed (%s); retrying", list->elems[i].topic,
                    list->elems[i].partition, rd_kafka_err2str(list->elems[i].err));
                ok = false;
            }
        if (ok)
            rd_kafka_resume_partitions(sink->consumer, list);
    }
    rd_kafka_topic_partition_list_destroy(list);
    if (ok) {
        sink->need_resync = false;
        sl_counter_add(sink->m.resyncs, 1);
    } else {
        sink->pg_retry_at_ms = sl_clock_mono_ms() + sink->backoff_min_ms;
    }
}

/* ---- the batch ---------------------------------------------------------- */

static void batch_clear(sl_pgsink *sink) {
    for (size_t i = 0; i < sink->n_msgs; i++)
        rd_kafka_message_destroy(sink->msgs[i].m);
    sink->n_msgs = sink->n_rows = sink->n_dlq = 0;
    sl_arena_reset(sink->arena);
    for (int t = 0; t < N_TOPICS; t++)
        for (int p = 0; p < MAX_PARTITIONS; p++)
            sink->parts[t][p].pending_next = sink->parts[t][p].committed_next;
}

static void add_dlq(sl_pgsink *sink, size_t msg, const char *reason) {
    dlq_item *d = &sink->dlq[sink->n_dlq++]; /* at most one per message */
    d->msg = msg;
    snprintf(d->reason, sizeof(d->reason), "%s", reason);
}

/* Decode a record value into the batch arena. protobuf-c keeps strings as C
 * strings, so a string with a NUL byte would silently lose its tail: a
 * value whose re-encoding has another size than the record is refused
 * rather than written shortened. */
static void decode_record(sl_pgsink *sink, size_t msg, int topic) {
    const rd_kafka_message_t *m = sink->msgs[msg].m;
    ProtobufCAllocator allocator = sl_arena_protobuf_allocator(sink->arena);
    const uint8_t *value = m->payload ? m->payload : (const uint8_t *)"";
    const ProtobufCMessage *base = NULL;
    const void *event = NULL;
    const char *what = topic == T_USERS ? "UsersEvent" : "DialogsEvent";
    bool empty = false;
    if (topic == T_USERS) {
        Sluice__V1__UsersEvent *ev = sluice__v1__users_event__unpack(&allocator, m->len, value);
        base = ev ? &ev->base : NULL;
        if (ev && ev->event_case == SLUICE__V1__USERS_EVENT__EVENT_USER_REGISTERED)
            event = ev->user_registered;
        empty = ev && ev->event_case == SLUICE__V1__USERS_EVENT__EVENT__NOT_SET;
    } else {
        Sluice__V1__DialogsEvent *ev = sluice__v1__dialogs_event__unpack(&allocator, m->len, value);
        base = ev ? &ev->base : NULL;
        if (ev && ev->event_case == SLUICE__V1__DIALOGS_EVENT__EVENT_MESSAGE_SENT)
            event = ev->message_sent;
        empty = ev && ev->event_case == SLUICE__V1__DIALOGS_EVENT__EVENT__NOT_SET;
    }
    char reason[256];
    if (!base) {
        snprintf(reason, sizeof(reason), "pgsink: value is not a valid %s", what);
    } else if (empty) {
        snprintf(reason, sizeof(reason), "pgsink: %s envelope has no event set", what);
    } else if (protobuf_c_message_get_packed_size(base) != m->len) {
        snprintf(reason, sizeof(reason),
                 "pgsink: %s re-encodes to another size (a string with a NUL byte, or a "
                 "non-canonical encoding)",
                 what);
    } else {
        if (event) /* other event types (rejections, password changes) make no row */
            sink->rows[sink->n_rows++] = (batch_row){.msg = msg, .topic = topic, .event = event};
        return;
    }
    add_dlq(sink, msg, reason);
}

/* COPY text of rows [lo, hi) of one table into sink->copy. */
static bool build_copy(sl_pgsink *sink, int topic, size_t lo, size_t hi, size_t *n) {
    buf *b = &sink->copy;
    b->len = 0;
    *n = 0;
    for (size_t i = lo; i < hi; i++) {
        const batch_row *row = &sink->rows[i];
        if (row->topic != topic)
            continue;
        const rd_kafka_message_t *m = sink->msgs[row->msg].m;
        bool ok;
        if (topic == T_MESSAGES) {
            const Sluice__V1__MessageSent *ms = row->event;
            ok = buf_field(b, ms->dialog_id, '\t') && buf_int(b, ms->sequence, '\t') &&
                 buf_field(b, ms->sender_id, '\t') && buf_field(b, ms->recipient_id, '\t') &&
                 buf_field(b, ms->text, '\t') && buf_int(b, ms->sent_at_ms, '\t');
        } else {
            const Sluice__V1__UserRegistered *ur = row->event;
            const Sluice__V1__Profile *pr = ur->profile;
            const char *birth = pr ? pr->birthdate : "";
            ok = buf_field(b, ur->user_id, '\t') && buf_field(b, ur->email, '\t') &&
                 buf_field(b, pr ? pr->first_name : "", '\t') &&
                 buf_field(b, pr ? pr->second_name : "", '\t') &&
                 (birth[0] ? buf_field(b, birth, '\t') : buf_put(b, "\\N\t", 3)) &&
                 buf_field(b, pr ? pr->biography : "", '\t') &&
                 buf_field(b, pr ? pr->city : "", '\t') && buf_int(b, ur->registered_at_ms, '\t');
        }
        ok = ok && buf_int(b, m->partition, '\t') && buf_int(b, m->offset, '\n');
        if (!ok)
            return false;
        (*n)++;
    }
    return true;
}

static uint64_t message_key_hash(const Sluice__V1__MessageSent *ms) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)ms->dialog_id; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    h ^= (uint64_t)ms->sequence;
    h *= 0x9e3779b97f4a7c15ULL;
    return h ^ (h >> 29);
}

static bool same_message_key(const Sluice__V1__MessageSent *a, const Sluice__V1__MessageSent *b) {
    return a->sequence == b->sequence && strcmp(a->dialog_id, b->dialog_id) == 0;
}

/* Mark every message row that a later row of the batch repeats (same
 * dialog_id and sequence) as superseded: the last one wins, as in the
 * staged path's DISTINCT ON. The set has at least twice as many slots as
 * the batch has rows, so probing always ends. */
static void dedupe_messages(sl_pgsink *sink) {
    size_t mask = sink->n_key_slots - 1;
    memset(sink->key_slots, 0, sink->n_key_slots * sizeof(*sink->key_slots));
    for (size_t i = 0; i < sink->n_rows; i++) {
        batch_row *row = &sink->rows[i];
        row->superseded = false;
        if (row->topic != T_MESSAGES)
            continue;
        const Sluice__V1__MessageSent *ms = row->event;
        for (size_t slot = message_key_hash(ms) & mask;; slot = (slot + 1) & mask) {
            uint32_t held = sink->key_slots[slot];
            if (held == 0) {
                sink->key_slots[slot] = (uint32_t)i + 1;
                break;
            }
            if (same_message_key(sink->rows[held - 1].event, ms)) {
                sink->rows[held - 1].superseded = true;
                sink->key_slots[slot] = (uint32_t)i + 1;
                break;
            }
        }
    }
}

/* COPY BINARY of the batch's messages, straight into the target table's
 * columns, superseded rows left out. */
static bool build_copy_messages_binary(sl_pgsink *sink, size_t *n) {
    static const char header[] = "PGCOPY\n\377\r\n"; /* + its NUL: 11 bytes */
    buf *b = &sink->copy;
    b->len = 0;
    *n = 0;
    if (!buf_put(b, header, sizeof(header)) || !buf_be(b, 0, 4) || !buf_be(b, 0, 4))
        return false;
    for (size_t i = 0; i < sink->n_rows; i++) {
        const batch_row *row = &sink->rows[i];
        if (row->topic != T_MESSAGES || row->superseded)
            continue;
        const Sluice__V1__MessageSent *ms = row->event;
        if (!buf_be(b, 6, 2) || !buf_bin_text(b, ms->dialog_id) || !buf_bin_int8(b, ms->sequence) ||
            !buf_bin_text(b, ms->sender_id) || !buf_bin_text(b, ms->recipient_id) ||
            !buf_bin_text(b, ms->text) || !buf_bin_timestamptz_ms(b, ms->sent_at_ms))
            return false;
        (*n)++;
    }
    return buf_be(b, 0xffff, 2); /* trailer: field count -1 */
}

static pg_res copy_in(sl_pgsink *sink, const char *sql, char *why, size_t why_size) {
    PGresult *res = PQexec(sink->pg, sql);
    if (PQresultStatus(res) != PGRES_COPY_IN) {
        pg_res r = pg_classify(sink->pg, res, why, why_size);
        PQclear(res);
        return r == PG_OK ? PG_RETRY : r;
    }
    PQclear(res);
    int put = PQputCopyData(sink->pg, sink->copy.data, (int)sink->copy.len);
    int end = PQputCopyEnd(sink->pg, put == 1 ? NULL : "sluice: sending COPY data failed");
    pg_res r = PG_OK;
    while ((res = PQgetResult(sink->pg)) != NULL) {
        if (r == PG_OK && PQresultStatus(res) != PGRES_COMMAND_OK)
            r = pg_classify(sink->pg, res, why, why_size);
        PQclear(res);
    }
    if (r == PG_OK && (put != 1 || end != 1))
        r = pg_classify(sink->pg, NULL, why, why_size);
    return r;
}

/* The whole batch's messages, deduplicated in C, by COPY BINARY straight
 * into the table: no stage, no sort, no speculative insertion. Any row that
 * already exists fails the COPY (unique_violation, class 23), as does a row
 * Postgres refuses: the caller then rolls back and takes the staged path. */
static pg_res write_messages_direct(sl_pgsink *sink, char *why, size_t why_size) {
    size_t n;
    dedupe_messages(sink);
    if (!build_copy_messages_binary(sink, &n)) {
        snprintf(why, why_size, "COPY buffer over %zu bytes", COPY_BUF_CAP);
        return PG_RETRY;
    }
    if (n == 0)
        return PG_OK;
    char sql[256];
    snprintf(sql, sizeof(sql),
             "COPY %s (dialog_id, sequence, sender_id, recipient_id, text, sent_at) "
             "FROM STDIN (FORMAT binary)",
             sink->tables[T_MESSAGES]);
    return copy_in(sink, sql, why, why_size);
}

/* Rows [lo, hi): COPY into the stage tables, upsert into the targets, empty
 * the stages (they are reused within the transaction by write_range). With
 * direct, the messages take write_messages_direct instead (lo..hi must be
 * the whole batch). */
static pg_res write_rows(sl_pgsink *sink, size_t lo, size_t hi, bool empty_stage, bool direct,
                         char *why, size_t why_size) {
    static const char *const copy_sql[N_TOPICS] = {"COPY sluice_stage_users FROM STDIN",
                                                   "COPY sluice_stage_messages FROM STDIN"};
    for (int t = 0; t < N_TOPICS; t++) {
        if (direct && t == T_MESSAGES) {
            pg_res r = write_messages_direct(sink, why, why_size);
            if (r != PG_OK)
                return r;
            continue;
        }
        size_t n;
        if (!build_copy(sink, t, lo, hi, &n)) {
            snprintf(why, why_size, "COPY buffer over %zu bytes", COPY_BUF_CAP);
            return PG_RETRY;
        }
        if (n == 0)
            continue;
        pg_res r = copy_in(sink, copy_sql[t], why, why_size);
        if (r != PG_OK)
            return r;
        char sql[1536];
        if (t == T_MESSAGES)
            snprintf(sql, sizeof(sql),
                     "INSERT INTO %s (dialog_id, sequence, sender_id, recipient_id, text, sent_at) "
                     "SELECT DISTINCT ON (dialog_id, sequence) dialog_id, sequence, sender_id, "
                     "recipient_id, text, timestamptz 'epoch' + sent_at_ms * interval '1 ms' "
                     "FROM sluice_stage_messages ORDER BY dialog_id, sequence, src_offset DESC "
                     "ON CONFLICT (dialog_id, sequence) DO NOTHING",
                     sink->tables[t]);
        else
            snprintf(sql, sizeof(sql),
                     "INSERT INTO %s AS u (id, email, first_name, second_name, birthdate, "
                     "biography, city, created_at) "
                     "SELECT DISTINCT ON (id) id, email, first_name, second_name, "
                     "birthdate::date, biography, city, "
                     "timestamptz 'epoch' + created_at_ms * interval '1 ms' "
                     "FROM sluice_stage_users ORDER BY id, src_partition DESC, src_offset DESC "
                     "ON CONFLICT (id) DO UPDATE SET email = excluded.email, "
                     "first_name = excluded.first_name, second_name = excluded.second_name, "
                     "birthdate = excluded.birthdate, biography = excluded.biography, "
                     "city = excluded.city, created_at = excluded.created_at "
                     "WHERE (u.email, u.first_name, u.second_name, u.birthdate, u.biography, "
                     "u.city, u.created_at) IS DISTINCT FROM (excluded.email, "
                     "excluded.first_name, excluded.second_name, excluded.birthdate, "
                     "excluded.biography, excluded.city, excluded.created_at)",
                     sink->tables[t]);
        if ((r = pg_run(sink->pg, sql, 0, NULL, why, why_size)) != PG_OK)
            return r;
        if (empty_stage && (r = pg_run(sink->pg,
                                       t == T_MESSAGES ? "DELETE FROM sluice_stage_messages"
                                                       : "DELETE FROM sluice_stage_users",
                                       0, NULL, why, why_size)) != PG_OK)
            return r;
    }
    return PG_OK;
}

/* Bisection under savepoints: keep what Postgres accepts, dead-letter each
 * single row it refuses, with its SQL error. */
static pg_res write_range(sl_pgsink *sink, size_t lo, size_t hi, char *why, size_t why_size) {
    if (lo >= hi)
        return PG_OK;
    pg_res r = pg_run(sink->pg, "SAVEPOINT sluice_rows", 0, NULL, why, why_size);
    if (r != PG_OK)
        return r;
    r = write_rows(sink, lo, hi, true, false, why, why_size);
    if (r == PG_OK)
        return pg_run(sink->pg, "RELEASE SAVEPOINT sluice_rows", 0, NULL, why, why_size);
    if (r != PG_DATA)
        return r;
    char row_error[480];
    snprintf(row_error, sizeof(row_error), "%s", why);
    if ((r = pg_run(sink->pg, "ROLLBACK TO SAVEPOINT sluice_rows", 0, NULL, why, why_size)) ||
        (r = pg_run(sink->pg, "RELEASE SAVEPOINT sluice_rows", 0, NULL, why, why_size)))
        return r;
    if (hi - lo == 1) {
        const rd_kafka_message_t *m = sink->msgs[sink->rows[lo].msg].m;
        LOG(sink, SL_LOG_WARN, "postgres refused the row of %s [%d] @%lld: %s",
            rd_kafka_topic_name(m->rkt), (int)m->partition, (long long)m->offset, row_error);
        char reason[512];
        snprintf(reason, sizeof(reason), "postgres: %s", row_error);
        add_dlq(sink, sink->rows[lo].msg, reason);
        return PG_OK;
    }
    size_t mid = lo + (hi - lo) / 2;
    r = write_range(sink, lo, mid, why, why_size);
    return r != PG_OK ? r : write_range(sink, mid, hi, why, why_size);
}

/* I3: conditional offset writes; PG_CONFLICT if another writer moved them. */
static pg_res store_offsets(sl_pgsink *sink, char *why, size_t why_size) {
    for (int t = 0; t < N_TOPICS; t++)
        for (int p = 0; p < MAX_PARTITIONS; p++) {
            const part_state *ps = &sink->parts[t][p];
            if (ps->pending_next == ps->committed_next)
                continue;
            char partition[16], next[32], expected[32];
            snprintf(partition, sizeof(partition), "%d", p);
            snprintf(next, sizeof(next), "%" PRId64, ps->pending_next);
            snprintf(expected, sizeof(expected), "%" PRId64, ps->committed_next);
            const char *params[] = {sink->offsets_group, sink->topics[t], partition, next,
                                    expected};
            PGresult *res =
                ps->committed_next < 0
                    ? PQexecParams(sink->pg,
                                   "INSERT INTO sluice_sink_offsets (group_id, topic, partition, "
                                   "next_offset) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                                   4, NULL, params, NULL, NULL, 0)
                    : PQexecParams(sink->pg,
                                   "UPDATE sluice_sink_offsets SET next_offset = $4, "
                                   "updated_at = now() WHERE group_id = $1 AND topic = $2 AND "
                                   "partition = $3 AND next_offset = $5",
                                   5, NULL, params, NULL, NULL, 0);
            if (PQresultStatus(res) != PGRES_COMMAND_OK) {
                pg_res r = pg_classify(sink->pg, res, why, why_size);
                PQclear(res);
                return r == PG_DATA ? PG_RETRY : r;
            }
            bool one = strcmp(PQcmdTuples(res), "1") == 0;
            PQclear(res);
            if (!one) {
                snprintf(why, why_size,
                         "stored offset of %s [%d] is not %" PRId64
                         " any more (another writer, or a rebuild swapped the tables)",
                         sink->topics[t], p, ps->committed_next);
                return PG_CONFLICT;
            }
        }
    return PG_OK;
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)opaque;
    sl_pgsink *sink = rd_kafka_opaque(rk);
    if (m->err)
        atomic_fetch_add(&sink->dlq_delivery_failures, 1);
}

/* Produce the batch's dead letters and wait for every delivery. */
static bool produce_dlq(sl_pgsink *sink, char *why, size_t why_size) {
    long failures_before = atomic_load(&sink->dlq_delivery_failures);
    for (size_t i = 0; i < sink->n_dlq; i++) {
        const dlq_item *d = &sink->dlq[i];
        const rd_kafka_message_t *m = sink->msgs[d->msg].m;
        char partition[16], offset[32];
        snprintf(partition, sizeof(partition), "%d", (int)m->partition);
        snprintf(offset, sizeof(offset), "%lld", (long long)m->offset);
        rd_kafka_headers_t *headers = rd_kafka_headers_new(5);
        rd_kafka_header_add(headers, "sluice.dlq.topic", -1, rd_kafka_topic_name(m->rkt), -1);
        rd_kafka_header_add(headers, "sluice.dlq.partition", -1, partition, -1);
        rd_kafka_header_add(headers, "sluice.dlq.offset", -1, offset, -1);
        rd_kafka_header_add(headers, "sluice.dlq.processor", -1, "pgsink", -1);
        rd_kafka_header_add(headers, "sluice.dlq.error", -1, d->reason, -1);
        rd_kafka_resp_err_t err = rd_kafka_producev(
            sink->producer, RD_KAFKA_V_TOPIC(sink->dlq_topic),
            RD_KAFKA_V_PARTITION(m->partition % sink->dlq_partitions),
            RD_KAFKA_V_KEY(m->key, m->key_len), RD_KAFKA_V_VALUE(m->payload, m->len),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(headers), RD_KAFKA_V_END);
        if (err) {
            rd_kafka_headers_destroy(headers);
            snprintf(why, why_size, "dead-letter produce: %s", rd_kafka_err2str(err));
            return false;
        }
    }
    rd_kafka_resp_err_t err = rd_kafka_flush(sink->producer, 30000);
    if (err || atomic_load(&sink->dlq_delivery_failures) != failures_before) {
        snprintf(why, why_size, "dead-letter delivery failed: %s",
                 err ? rd_kafka_err2str(err) : "see the kafka log");
        return false;
    }
    return true;
}

/* The flush transaction (see the design note). */
static pg_res write_batch(sl_pgsink *sink, char *why, size_t why_size) {
    char ignored[128];
    pg_res r = pg_run(sink->pg, "BEGIN", 0, NULL, why, why_size);
    if (r == PG_OK && sink->n_rows > 0) {
        bool direct = sink->direct_skip == 0;
        if (sink->direct_skip > 0)
            sink->direct_skip--;
        r = write_rows(sink, 0, sink->n_rows, false, direct, why, why_size);
        if (r == PG_DATA && direct) {
            /* A row exists already (a key repeated across batches) or is
             * refused: redo the batch through the stage, which handles both,
             * and stay there for a while so repeats cost one failed COPY
             * per DIRECT_SKIP_BATCHES batches at most. */
            LOG(sink, SL_LOG_DEBUG, "direct COPY of %zu rows refused (%s): using the stage",
                sink->n_rows, why);
            sink->direct_skip = DIRECT_SKIP_BATCHES;
            pg_run(sink->pg, "ROLLBACK", 0, NULL, ignored, sizeof(ignored));
            r = pg_run(sink->pg, "BEGIN", 0, NULL, why, why_size);
            if (r == PG_OK)
                r = write_rows(sink, 0, sink->n_rows, false, false, why, why_size);
        }
        if (r == PG_DATA) {
            LOG(sink, SL_LOG_INFO, "batch of %zu rows refused (%s): isolating the bad rows",
                sink->n_rows, why);
            pg_run(sink->pg, "ROLLBACK", 0, NULL, ignored, sizeof(ignored));
            r = pg_run(sink->pg, "BEGIN", 0, NULL, why, why_size);
            if (r == PG_OK)
                r = write_range(sink, 0, sink->n_rows, why, why_size);
        }
    }
    if (r == PG_OK)
        r = store_offsets(sink, why, why_size);
    if (r == PG_OK && sink->n_dlq > 0 && !produce_dlq(sink, why, why_size))
        r = PG_CONFLICT; /* not Postgres' fault: roll back and re-read the batch */
    if (r == PG_OK)
        r = pg_run(sink->pg, "COMMIT", 0, NULL, why, why_size);
    else if (PQstatus(sink->pg) == CONNECTION_OK)
        pg_run(sink->pg, "ROLLBACK", 0, NULL, ignored, sizeof(ignored));
    return r == PG_DATA ? PG_RETRY : r;
}

static void commit_to_kafka_for_monitoring(sl_pgsink *sink) {
    if (!sink->group_mode)
        return;
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(16);
    for (int t = 0; t < N_TOPICS; t++)
        for (int p = 0; p < MAX_PARTITIONS; p++) {
            const part_state *ps = &sink->parts[t][p];
            if (ps->assigned && ps->pending_next != ps->committed_next && ps->pending_next >= 0)
                rd_kafka_topic_partition_list_add(list, sink->topics[t], p)->offset =
                    ps->pending_next;
        }
    if (list->cnt > 0)
        rd_kafka_commit(sink->consumer, list, 1); /* async; never read back (I2) */
    rd_kafka_topic_partition_list_destroy(list);
}

static void flush(sl_pgsink *sink) {
    if (sink->n_msgs == 0 || !sink->pg || sink->need_resync)
        return;
    char why[512];
    int64_t t0 = sl_clock_mono_ms();
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    pg_res r = write_batch(sink, why, sizeof(why));
    clock_gettime(CLOCK_MONOTONIC, &b);
    (void)t0;
    if (r == PG_OK) {
        sl_histogram_observe(sink->m.txn_seconds,
                             (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9);
        sl_histogram_observe(sink->m.batch_rows, (double)sink->n_rows);
        sl_counter_add(sink->m.transactions, 1);
        sl_counter_add(sink->m.records, sink->n_msgs);
        sl_counter_add(sink->m.dead_lettered, sink->n_dlq);
        size_t per_topic[N_TOPICS] = {0};
        for (size_t i = 0; i < sink->n_rows; i++)
            per_topic[sink->rows[i].topic]++;
        for (int t = 0; t < N_TOPICS; t++)
            sl_counter_add(sink->m.rows[t], per_topic[t]);
        sink->rows_total += (int64_t)sink->n_rows;
        commit_to_kafka_for_monitoring(sink);
        for (int t = 0; t < N_TOPICS; t++)
            for (int p = 0; p < MAX_PARTITIONS; p++)
                sink->parts[t][p].committed_next = sink->parts[t][p].pending_next;
        batch_clear(sink);
    } else if (r == PG_CONFLICT) {
        LOG(sink, SL_LOG_WARN, "batch rolled back (%s): re-reading offsets from postgres", why);
        batch_clear(sink);
        sink->need_resync = true;
        sink->pg_retry_at_ms = sl_clock_mono_ms() + sink->backoff_min_ms;
    } else {
        pg_failed(sink, why);
    }
}

/* ---- Kafka -------------------------------------------------------------- */

static int topic_index(const sl_pgsink *sink, const char *name) {
    for (int t = 0; t < N_TOPICS; t++)
        if (strcmp(sink->topics[t], name) == 0)
            return t;
    return -1;
}

static void handle_message(sl_pgsink *sink, rd_kafka_message_t *m) {
    int t = m->rkt ? topic_index(sink, rd_kafka_topic_name(m->rkt)) : -1;
    if (m->err) {
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF && t >= 0 && m->partition >= 0 &&
            m->partition < MAX_PARTITIONS)
            sink->parts[t][m->partition].eof = true;
        else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
            LOG(sink, SL_LOG_WARN, "consumer: %s", rd_kafka_message_errstr(m));
        rd_kafka_message_destroy(m);
        return;
    }
    part_state *ps = t >= 0 && m->partition >= 0 && m->partition < MAX_PARTITIONS
                         ? &sink->parts[t][m->partition]
                         : NULL;
    /* I4, and nothing is taken while paused or before a resync. */
    if (!ps || !ps->assigned || sink->need_resync || !sink->pg ||
        (ps->pending_next >= 0 && m->offset < ps->pending_next)) {
        rd_kafka_message_destroy(m);
        return;
    }
    /* Keep the decoded batch inside the arena's cap: flush first. */
    if (sink->n_msgs > 0 && sl_arena_used(sink->arena) + 4 * m->len + 65536 > ARENA_CAP) {
        flush(sink);
        if (sink->n_msgs > 0 || !sink->pg || sink->need_resync) {
            rd_kafka_message_destroy(m);
            return;
        }
    }
    if (sink->n_msgs == 0)
        sink->batch_started_ms = sl_clock_mono_ms();
    size_t i = sink->n_msgs++;
    sink->msgs[i] = (batch_msg){.m = m, .topic = t};
    ps->pending_next = m->offset + 1;
    ps->eof = false;
    decode_record(sink, i, t);
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *list, void *opaque) {
    (void)opaque;
    sl_pgsink *sink = rd_kafka_opaque(rk);
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        char why[512];
        bool loaded =
            sink->pg && !sink->need_resync && load_offsets(sink, why, sizeof(why)) == PG_OK;
        for (int i = 0; i < list->cnt; i++) {
            int t = topic_index(sink, list->elems[i].topic);
            int p = list->elems[i].partition;
            if (t < 0 || p < 0 || p >= MAX_PARTITIONS) {
                LOG(sink, SL_LOG_ERROR, "assigned %s [%d], which the sink cannot track",
                    list->elems[i].topic, p);
                continue;
            }
            part_state *ps = &sink->parts[t][p];
            ps->assigned = true;
            if (loaded)
                ps->pending_next = ps->committed_next;
            list->elems[i].offset = loaded ? start_offset(ps) : RD_KAFKA_OFFSET_BEGINNING;
        }
        LOG(sink, SL_LOG_INFO, "assigned %d partitions%s", list->cnt,
            loaded ? " at the offsets stored in postgres" : " (paused until postgres answers)");
        rd_kafka_assign(rk, list);
        if (!loaded) {
            rd_kafka_pause_partitions(rk, list);
            sink->need_resync = true;
        }
    } else {
        /* Write what we have while we still own it; whatever fails is
         * dropped: the next owner starts from Postgres anyway. */
        flush(sink);
        batch_clear(sink);
        for (int i = 0; i < list->cnt; i++) {
            int t = topic_index(sink, list->elems[i].topic);
            int p = list->elems[i].partition;
            if (t >= 0 && p >= 0 && p < MAX_PARTITIONS)
                sink->parts[t][p].assigned = false;
        }
        LOG(sink, SL_LOG_INFO, "revoked %d partitions", list->cnt);
        rd_kafka_assign(rk, NULL);
    }
}

static rd_kafka_t *new_consumer(sl_pgsink *sink, const char *group, bool group_mode, char *errstr,
                                size_t errstr_size) {
    const char *bootstrap = sl_config_get(sink->config, "bootstrap.servers");
    rd_kafka_conf_t *conf = sl_kafka_conf_new(RD_KAFKA_CONSUMER, bootstrap, sink->config,
                                              &sink->logger, errstr, errstr_size);
    if (!conf)
        return NULL;
    if (sl_kafka_conf_set(conf, "group.id", group, errstr, errstr_size) ||
        sl_kafka_conf_set(conf, "isolation.level", "read_committed", errstr, errstr_size) ||
        sl_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, errstr_size) ||
        sl_kafka_conf_set(conf, "enable.auto.offset.store", "false", errstr, errstr_size) ||
        sl_kafka_conf_set(conf, "auto.offset.reset", "earliest", errstr, errstr_size) ||
        sl_kafka_conf_set(conf, "enable.partition.eof", group_mode ? "false" : "true", errstr,
                          errstr_size)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_opaque(conf, sink);
    if (group_mode)
        rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    char why[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof(why));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        sl_fail(errstr, errstr_size, SL_ERR_KAFKA, "cannot create consumer: %s", why);
        return NULL;
    }
    rd_kafka_poll_set_consumer(rk);
    return rk;
}

static sl_err start_group_consumer(sl_pgsink *sink, char *errstr, size_t errstr_size) {
    sink->consumer = new_consumer(sink, sink->group_id, true, errstr, errstr_size);
    if (!sink->consumer)
        return SL_ERR_KAFKA;
    sink->group_mode = true;
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(N_TOPICS);
    for (int t = 0; t < N_TOPICS; t++)
        rd_kafka_topic_partition_list_add(list, sink->topics[t], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(sink->consumer, list);
    rd_kafka_topic_partition_list_destroy(list);
    if (err)
        return sl_fail(errstr, errstr_size, SL_ERR_KAFKA, "subscribe: %s", rd_kafka_err2str(err));
    return SL_OK;
}

static void close_consumer(sl_pgsink *sink) {
    if (!sink->consumer)
        return;
    if (sink->group_mode)
        rd_kafka_consumer_close(sink->consumer); /* runs the revoke callback */
    batch_clear(sink);
    rd_kafka_destroy(sink->consumer);
    sink->consumer = NULL;
    for (int t = 0; t < N_TOPICS; t++)
        for (int p = 0; p < MAX_PARTITIONS; p++)
            sink->parts[t][p] = (part_state){.committed_next = -1, .pending_next = -1};
}

static void update_lag(sl_pgsink *sink) {
    int64_t lag = 0;
    for (int t = 0; t < N_TOPICS; t++)
        for (int p = 0; p < MAX_PARTITIONS; p++) {
            const part_state *ps = &sink->parts[t][p];
            int64_t lo, hi;
            if (!ps->assigned ||
                rd_kafka_get_watermark_offsets(sink->consumer, sink->topics[t], p, &lo, &hi) != 0 ||
                hi < 0)
                continue;
            int64_t at = ps->committed_next >= 0 ? ps->committed_next : lo;
            if (hi > at)
                lag += hi - at;
        }
    sl_gauge_set(sink->m.lag, (double)lag);
}

/* ---- HTTP ----------------------------------------------------------------- */

static void respond_json(sl_http_response *resp, int status, json_t *obj) {
    char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (!text || sl_http_respond_json(resp, status, text))
        sl_http_respond_error(resp, 500, "out of memory");
    free(text);
}

static void healthz(void *opaque, const sl_http_request *req, sl_http_response *resp) {
    (void)opaque;
    (void)req;
    respond_json(resp, 200, json_pack("{s:s}", "status", "ok"));
}

static void readyz(void *opaque, const sl_http_request *req, sl_http_response *resp) {
    (void)req;
    sl_pgsink *sink = opaque;
    sl_pgsink_state state = sl_pgsink_state_get(sink);
    bool ready = state == SL_PGSINK_RUNNING || state == SL_PGSINK_REBUILDING;
    json_int_t rows = 0;
    for (int t = 0; t < N_TOPICS; t++)
        rows += (json_int_t)sl_counter_value(sink->m.rows[t]);
    respond_json(resp, ready ? 200 : 503,
                 json_pack("{s:s, s:s, s:I, s:I, s:I, s:I}", "status",
                           ready ? "ready" : "not_ready", "state", sl_pgsink_state_name(state),
                           "rows", rows, "records", (json_int_t)sl_counter_value(sink->m.records),
                           "dead_lettered", (json_int_t)sl_counter_value(sink->m.dead_lettered),
                           "lag", (json_int_t)sl_gauge_value(sink->m.lag)));
    if (!ready)
        sl_http_response_retry_after(resp, 1);
}

static void register_metrics(sl_pgsink *sink) {
    sl_metrics *m = sink->metrics;
    for (int t = 0; t < N_TOPICS; t++) {
        const char *labels[] = {"table", default_tables[t], NULL};
        sink->m.rows[t] = sl_metrics_counter(
            m, "sluice_pgsink_rows_total",
            "Rows written to Postgres in committed transactions (rate() gives rows/s).", labels);
    }
    sink->m.records = sl_metrics_counter(m, "sluice_pgsink_records_total",
                                         "Records consumed and committed to Postgres.", NULL);
    sink->m.dead_lettered = sl_metrics_counter(
        m, "sluice_pgsink_dead_lettered_total",
        "Records sent to the dead-letter topic (undecodable, or refused by Postgres).", NULL);
    sink->m.transactions =
        sl_metrics_counter(m, "sluice_pgsink_transactions_total", "Committed batches.", NULL);
    sink->m.pg_failures = sl_metrics_counter(m, "sluice_pgsink_postgres_failures_total",
                                             "Failed Postgres connects or batches.", NULL);
    sink->m.resyncs = sl_metrics_counter(m, "sluice_pgsink_resyncs_total",
                                         "Seeks to the offsets stored in Postgres.", NULL);
    static const double rows_bounds[] = {1, 10, 100, 500, 1000, 2000, 5000, 10000, 50000};
    sink->m.batch_rows = sl_metrics_histogram(m, "sluice_pgsink_batch_rows",
                                              "Rows per committed batch.", NULL, rows_bounds, 9);
    static const double s_bounds[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1,
                                      0.25,  0.5,   1,    2.5,   5,    10};
    sink->m.txn_seconds = sl_metrics_histogram(m, "sluice_pgsink_transaction_seconds",
                                               "Duration of a batch transaction, BEGIN to COMMIT.",
                                               NULL, s_bounds, 12);
    sink->m.lag = sl_metrics_gauge(
        m, "sluice_pgsink_lag_records",
        "Records between the offsets stored in Postgres and the partitions' ends.", NULL);
    for (int i = 0; i < 4; i++) {
        const char *labels[] = {"state", sl_pgsink_state_name((sl_pgsink_state)i), NULL};
        sink->m.state[i] = sl_metrics_gauge(m, "sluice_pgsink_state",
                                            "1 for the sink's current state, else 0.", labels);
    }
}

/* ---- lifecycle ------------------------------------------------------------ */

sl_pgsink *sl_pgsink_new(const sl_config *config, const sl_logger *logger, sl_pgsink_mode mode,
                         char *errstr, size_t errstr_size) {
    const char *dsn = sl_config_get(config, "pg.dsn");
    if (!dsn || !dsn[0]) {
        sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "pg.dsn (or SLUICE_PG_DSN) must be set");
        return NULL;
    }
    if (!sl_config_get(config, "bootstrap.servers")[0]) {
        sl_fail(errstr, errstr_size, SL_ERR_CONFIG,
                "the sink needs a real Kafka cluster: set bootstrap.servers (KAFKA_BOOTSTRAP)");
        return NULL;
    }
    sl_pgsink *sink = calloc(1, sizeof(*sink));
    if (!sink) {
        sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    sink->logger = *logger;
    sink->config = config;
    sink->mode = mode;
    sink->dsn = dsn;
    const char *app_id = sl_config_get(config, "application.id");
    const char *group = sl_config_get(config, "pg.sink.group.id");
    if (group[0])
        snprintf(sink->group_id, sizeof(sink->group_id), "%s", group);
    else
        snprintf(sink->group_id, sizeof(sink->group_id), "%s-pgsink", app_id);
    snprintf(sink->offsets_group, sizeof(sink->offsets_group), "%s", sink->group_id);
    snprintf(sink->topics[T_USERS], sizeof(sink->topics[0]), "%s",
             sl_config_get(config, "pg.sink.users.topic"));
    snprintf(sink->topics[T_MESSAGES], sizeof(sink->topics[0]), "%s",
             sl_config_get(config, "pg.sink.messages.topic"));
    snprintf(sink->dlq_topic, sizeof(sink->dlq_topic), "%s-dlq", app_id);
    for (int t = 0; t < N_TOPICS; t++)
        sink->tables[t] = default_tables[t];
    sink->batch_rows = (int)sl_config_get_int(config, "pg.sink.batch.rows");
    sink->linger_ms = (int)sl_config_get_int(config, "pg.sink.linger.ms");
    sink->backoff_min_ms = (int)sl_config_get_int(config, "pg.sink.retry.backoff.ms");
    sink->backoff_max_ms = (int)sl_config_get_int(config, "pg.sink.retry.backoff.max.ms");
    if (sink->backoff_max_ms < sink->backoff_min_ms)
        sink->backoff_max_ms = sink->backoff_min_ms;
    sink->backoff_ms = sink->backoff_min_ms;
    for (int t = 0; t < N_TOPICS; t++)
        for (int p = 0; p < MAX_PARTITIONS; p++)
            sink->parts[t][p] = (part_state){.committed_next = -1, .pending_next = -1};
    sink->msgs = calloc((size_t)sink->batch_rows, sizeof(*sink->msgs));
    sink->rows = calloc((size_t)sink->batch_rows, sizeof(*sink->rows));
    sink->dlq = calloc((size_t)sink->batch_rows, sizeof(*sink->dlq));
    sink->n_key_slots = 16;
    while (sink->n_key_slots < 2 * (size_t)sink->batch_rows)
        sink->n_key_slots *= 2;
    sink->key_slots = calloc(sink->n_key_slots, sizeof(*sink->key_slots));
    sink->arena = sl_arena_new(ARENA_CAP);
    sink->metrics = sl_metrics_new(256);
    if (!sink->msgs || !sink->rows || !sink->dlq || !sink->key_slots || !sink->arena ||
        !sink->metrics) {
        sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
        goto fail;
    }
    register_metrics(sink);
    set_state(sink, SL_PGSINK_STARTING);
    sl_http_options options = {
        .host = sl_config_get(config, "http.host"),
        .port = (int)sl_config_get_int(config, "http.port"),
        .threads = (int)sl_config_get_int(config, "http.threads"),
        .max_connections = (int)sl_config_get_int(config, "http.max.connections"),
        .connection_timeout_s = (int)sl_config_get_int(config, "http.connection.timeout.s"),
        .max_body_bytes = 4096,
    };
    sink->http = sl_http_server_new(&options, &sink->logger, errstr, errstr_size);
    if (!sink->http)
        goto fail;
    sl_err err;
    if ((err = sl_http_route(sink->http, "GET", "/healthz", healthz, sink)) ||
        (err = sl_http_route(sink->http, "GET", "/readyz", readyz, sink)) ||
        (err = sl_http_route(sink->http, "GET", "/metrics", sl_metrics_http_handler,
                             sink->metrics))) {
        sl_fail(errstr, errstr_size, err, "cannot register routes: %s", sl_err_msg(err));
        goto fail;
    }
    if (sl_http_server_start(sink->http, errstr, errstr_size))
        goto fail;
    LOG(sink, SL_LOG_INFO, "listening on http://%s:%d (GET /healthz, /readyz, /metrics)",
        options.host, sl_http_server_port(sink->http));
    return sink;
fail:
    sl_pgsink_destroy(sink);
    return NULL;
}

unsigned long long sl_pgsink_rows_written(const sl_pgsink *sink) {
    unsigned long long rows = 0;
    for (int t = 0; t < N_TOPICS; t++)
        rows += sl_counter_value(sink->m.rows[t]);
    return rows;
}

int sl_pgsink_http_port(const sl_pgsink *sink) {
    return sl_http_server_port(sink->http);
}

void sl_pgsink_destroy(sl_pgsink *sink) {
    if (!sink)
        return;
    sl_http_server_destroy(sink->http);
    if (sink->consumer) {
        batch_clear(sink);
        rd_kafka_destroy(sink->consumer);
    }
    if (sink->producer) {
        rd_kafka_flush(sink->producer, 5000);
        rd_kafka_destroy(sink->producer);
    }
    pg_close(sink);
    sl_metrics_destroy(sink->metrics);
    sl_arena_destroy(sink->arena);
    free(sink->copy.data);
    free(sink->msgs);
    free(sink->rows);
    free(sink->dlq);
    free(sink->key_slots);
    free(sink);
}

/* The DLQ producer, the input topics' existence and the DLQ topic. */
static sl_err start_kafka(sl_pgsink *sink, char *errstr, size_t errstr_size) {
    rd_kafka_conf_t *conf =
        sl_kafka_conf_new(RD_KAFKA_PRODUCER, sl_config_get(sink->config, "bootstrap.servers"),
                          sink->config, &sink->logger, errstr, errstr_size);
    if (!conf)
        return SL_ERR_CONFIG;
    if (sl_kafka_conf_set(conf, "enable.idempotence", "true", errstr, errstr_size)) {
        rd_kafka_conf_destroy(conf);
        return SL_ERR_CONFIG;
    }
    rd_kafka_conf_set_opaque(conf, sink);
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    char why[512];
    sink->producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why));
    if (!sink->producer) {
        rd_kafka_conf_destroy(conf);
        return sl_fail(errstr, errstr_size, SL_ERR_KAFKA, "cannot create producer: %s", why);
    }
    for (int t = 0; t < N_TOPICS; t++) {
        sl_err err = sl_admin_topic_partitions(sink->producer, sink->topics[t], ADMIN_TIMEOUT,
                                               &sink->n_partitions[t], errstr, errstr_size);
        if (err)
            return err == SL_ERR_NOT_FOUND
                       ? sl_fail(errstr, errstr_size, err, "input topic %s does not exist",
                                 sink->topics[t])
                       : err;
        if (sink->n_partitions[t] > MAX_PARTITIONS)
            return sl_fail(errstr, errstr_size, SL_ERR_CONFIG,
                           "%s has %d partitions; the sink tracks at most %d", sink->topics[t],
                           sink->n_partitions[t], MAX_PARTITIONS);
    }
    sl_err err = sl_admin_topic_partitions(sink->producer, sink->dlq_topic, ADMIN_TIMEOUT,
                                           &sink->dlq_partitions, errstr, errstr_size);
    if (err == SL_ERR_NOT_FOUND) {
        /* Same partition count as the engine would give it (its first source). */
        sink->dlq_partitions = sink->n_partitions[T_MESSAGES];
        sl_topic_spec spec = {
            .name = sink->dlq_topic,
            .partitions = sink->dlq_partitions,
            .replication_factor = (int)sl_config_get_int(sink->config, "topic.replication.factor"),
        };
        err = sl_admin_ensure_topic(sink->producer, &spec, ADMIN_TIMEOUT, errstr, errstr_size);
    }
    return err;
}

static bool all_at_end(const sl_pgsink *sink) {
    for (int t = 0; t < N_TOPICS; t++)
        for (int p = 0; p < sink->n_partitions[t]; p++)
            if (!sink->parts[t][p].eof)
                return false;
    return true;
}

/* One loop iteration: reconnect, resync, poll, flush on size or linger. */
static void step(sl_pgsink *sink) {
    int64_t now = sl_clock_mono_ms();
    if (!sink->pg && now >= sink->pg_retry_at_ms)
        pg_connect(sink);
    if (sink->pg && sink->need_resync && now >= sink->pg_retry_at_ms)
        resync(sink);
    int wait = 100;
    if (sink->n_msgs > 0) {
        int64_t left = sink->batch_started_ms + sink->linger_ms - now;
        wait = left < 0 ? 0 : left < wait ? (int)left : wait;
    }
    /* Drain what is already fetched without waiting, up to a batch. */
    for (int i = 0; i < sink->batch_rows; i++) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(sink->consumer, i == 0 ? wait : 0);
        if (!m)
            break;
        handle_message(sink, m);
        if ((int)sink->n_msgs >= sink->batch_rows)
            break;
    }
    now = sl_clock_mono_ms();
    if ((int)sink->n_msgs >= sink->batch_rows ||
        (sink->n_msgs > 0 && now - sink->batch_started_ms >= sink->linger_ms) ||
        (sink->n_msgs > 0 && !sink->group_mode && all_at_end(sink)))
        flush(sink);
}

static pg_res rebuild_prepare(sl_pgsink *sink, char *why, size_t why_size) {
    const char *params[] = {sink->offsets_group};
    pg_res r;
    if ((r = pg_run(sink->pg, "DROP TABLE IF EXISTS users_rebuild, messages_rebuild CASCADE", 0,
                    NULL, why, why_size)) ||
        (r = pg_run(sink->pg, "DELETE FROM sluice_sink_offsets WHERE group_id = $1", 1, params, why,
                    why_size)) ||
        (r = pg_run(sink->pg, "SELECT sluice_create_users_table('users_rebuild')", 0, NULL, why,
                    why_size)) ||
        (r = pg_run(sink->pg,
                    "SELECT sluice_create_messages_table('messages_rebuild', (SELECT count(*) "
                    "FROM pg_inherits WHERE inhparent = 'messages'::regclass)::int)",
                    0, NULL, why, why_size)))
        return r;
    return PG_OK;
}

/* One transaction: the new tables and their offsets replace the old ones. */
static pg_res rebuild_swap(sl_pgsink *sink, char *why, size_t why_size) {
    const char *params[] = {sink->group_id, sink->offsets_group};
    char ignored[128];
    pg_res r;
    if ((r = pg_run(sink->pg, "BEGIN", 0, NULL, why, why_size)) ||
        (r = pg_run(sink->pg, "SELECT sluice_swap_table('users_rebuild', 'users')", 0, NULL, why,
                    why_size)) ||
        (r = pg_run(sink->pg, "SELECT sluice_swap_table('messages_rebuild', 'messages')", 0, NULL,
                    why, why_size)) ||
        (r = pg_run(sink->pg, "DELETE FROM sluice_sink_offsets WHERE group_id = $1", 1, params, why,
                    why_size)) ||
        (r = pg_run(sink->pg,
                    "UPDATE sluice_sink_offsets SET group_id = $1, updated_at = now() "
                    "WHERE group_id = $2",
                    2, params, why, why_size)) ||
        (r = pg_run(sink->pg, "COMMIT", 0, NULL, why, why_size))) {
        if (PQstatus(sink->pg) == CONNECTION_OK)
            pg_run(sink->pg, "ROLLBACK", 0, NULL, ignored, sizeof(ignored));
        return r;
    }
    return PG_OK;
}

static void wait_for_pg(sl_pgsink *sink, volatile sig_atomic_t *stop) {
    while (!*stop && !sink->pg) {
        int64_t left = sink->pg_retry_at_ms - sl_clock_mono_ms();
        if (left > 0) {
            struct timespec ts = {.tv_sec = 0, .tv_nsec = (left > 100 ? 100 : left) * 1000000};
            nanosleep(&ts, NULL);
            continue;
        }
        pg_connect(sink);
    }
}

/* Build users_rebuild/messages_rebuild from the beginning of the topics with
 * an assign-only consumer (running sinks keep serving the old tables), then
 * swap. Returns false only when stopped first. */
static bool rebuild(sl_pgsink *sink, volatile sig_atomic_t *stop, char *errstr,
                    size_t errstr_size) {
    set_state(sink, SL_PGSINK_REBUILDING);
    snprintf(sink->offsets_group, sizeof(sink->offsets_group), "%s/rebuild", sink->group_id);
    char why[512];
    for (;;) {
        wait_for_pg(sink, stop);
        if (*stop)
            return false;
        pg_res r = rebuild_prepare(sink, why, sizeof(why));
        if (r == PG_OK)
            break;
        pg_failed(sink, why);
    }
    for (int t = 0; t < N_TOPICS; t++)
        sink->tables[t] = rebuild_tables[t];
    char rebuild_group[320];
    snprintf(rebuild_group, sizeof(rebuild_group), "%s-rebuild", sink->group_id);
    sink->consumer = new_consumer(sink, rebuild_group, false, errstr, errstr_size);
    if (!sink->consumer)
        return false;
    sink->group_mode = false;
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(16);
    int64_t total_end = 0;
    for (int t = 0; t < N_TOPICS; t++)
        for (int p = 0; p < sink->n_partitions[t]; p++) {
            sink->parts[t][p].assigned = true;
            rd_kafka_topic_partition_list_add(list, sink->topics[t], p)->offset =
                RD_KAFKA_OFFSET_BEGINNING;
            int64_t lo, hi;
            if (rd_kafka_query_watermark_offsets(sink->consumer, sink->topics[t], p, &lo, &hi,
                                                 ADMIN_TIMEOUT) == 0)
                total_end += hi - lo;
        }
    rd_kafka_assign(sink->consumer, list);
    rd_kafka_topic_partition_list_destroy(list);
    sink->need_resync = false;
    LOG(sink, SL_LOG_INFO,
        "rebuild: building users_rebuild and messages_rebuild from the beginning of %s and %s "
        "(about %" PRId64 " records); the current tables stay readable",
        sink->topics[T_USERS], sink->topics[T_MESSAGES], total_end);
    int64_t started = sl_clock_mono_ms(), last_log = started;
    while (!*stop) {
        step(sink);
        int64_t now = sl_clock_mono_ms();
        if (now - last_log >= 5000) {
            last_log = now;
            update_lag(sink);
            LOG(sink, SL_LOG_INFO,
                "rebuild: %" PRId64 " rows in %.0f s (%.0f rows/s), %.0f records behind",
                sink->rows_total, (double)(now - started) / 1000.0,
                (double)sink->rows_total * 1000.0 / (double)(now - started + 1),
                sl_gauge_value(sink->m.lag));
        }
        if (sink->pg && !sink->need_resync && sink->n_msgs == 0 && all_at_end(sink)) {
            pg_res r = rebuild_swap(sink, why, sizeof(why));
            if (r == PG_OK)
                break;
            pg_failed(sink, why);
        }
    }
    if (*stop)
        return false;
    LOG(sink, SL_LOG_INFO,
        "rebuild: %" PRId64 " rows in %.1f s; new tables swapped in, continuing as the group",
        sink->rows_total, (double)(sl_clock_mono_ms() - started) / 1000.0);
    close_consumer(sink);
    for (int t = 0; t < N_TOPICS; t++)
        sink->tables[t] = default_tables[t];
    snprintf(sink->offsets_group, sizeof(sink->offsets_group), "%s", sink->group_id);
    sink->mode = SL_PGSINK_RUN;
    set_state(sink, SL_PGSINK_RUNNING);
    return true;
}

sl_err sl_pgsink_run(sl_pgsink *sink, volatile sig_atomic_t *stop) {
    char errstr[512];
    sl_err err = start_kafka(sink, errstr, sizeof(errstr));
    if (err) {
        LOG(sink, SL_LOG_ERROR, "%s", errstr);
        return err;
    }
    /* Migrations first: retried like any Postgres outage. */
    for (;;) {
        if (*stop)
            return SL_OK;
        err = sl_pgsink_migrate(sink->dsn, &sink->logger, NULL, errstr, sizeof(errstr));
        if (!err)
            break;
        pg_failed(sink, errstr);
        wait_for_pg(sink, stop); /* connects only when Postgres answers again */
        pg_close(sink);
    }
    if (sink->mode == SL_PGSINK_REBUILD && !rebuild(sink, stop, errstr, sizeof(errstr))) {
        if (!*stop) {
            LOG(sink, SL_LOG_ERROR, "rebuild: %s", errstr);
            return SL_ERR_KAFKA;
        }
        return SL_OK;
    }
    LOG(sink, SL_LOG_INFO, "consuming %s and %s as group %s into tables %s and %s",
        sink->topics[T_USERS], sink->topics[T_MESSAGES], sink->group_id, sink->tables[T_USERS],
        sink->tables[T_MESSAGES]);
    err = start_group_consumer(sink, errstr, sizeof(errstr));
    if (err) {
        LOG(sink, SL_LOG_ERROR, "%s", errstr);
        return err;
    }
    int64_t last_lag = 0;
    while (!*stop) {
        step(sink);
        int64_t now = sl_clock_mono_ms();
        if (now - last_lag >= 1000) {
            last_lag = now;
            update_lag(sink);
        }
    }
    flush(sink);
    close_consumer(sink);
    LOG(sink, SL_LOG_INFO, "stopped");
    return SL_OK;
}
