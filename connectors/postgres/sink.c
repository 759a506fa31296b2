/*
 * sink.c: the Postgres sink's loop (see sink.h, docs/ARCHITECTURE.md
 * section 7). The batch is in rows.c, the writer (COPY, upsert, bisection)
 * in copy.c, connections, migrations and the rebuild in tables.c,
 * construction, HTTP and metrics in lifecycle.c; sink_int.h joins them.
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
#include "connectors/postgres/sink_int.h"
#include "processor/base/clock.h"

#include <inttypes.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "processor/base/arena.h"
#include "processor/base/metrics.h"
#include "processor/kafka/client.h"

/* ---- small helpers ------------------------------------------------------ */

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

void sl_pgsink_set_state(sl_pgsink *sink, sl_pgsink_state state) {
    atomic_store(&sink->state, (int)state);
    for (int i = 0; i < 4; i++)
        sl_gauge_set(sink->m.state[i], i == (int)state ? 1 : 0);
}

sl_pgsink_state sl_pgsink_state_get(const sl_pgsink *sink) {
    return (sl_pgsink_state)atomic_load(&((sl_pgsink *)sink)->state);
}

/* Stage tables live as long as the connection; ON COMMIT DELETE ROWS empties
 * them at every commit. */
static const char stage_ddl[] =
    "CREATE TEMP TABLE sluice_stage_users (id text, email text, first_name text, "
    "second_name text, birthdate text, biography text, city text, created_at_ms bigint, "
    "traceparent text, src_partition int, src_offset bigint) ON COMMIT DELETE ROWS;"
    "CREATE TEMP TABLE sluice_stage_messages (dialog_id text, sequence bigint, sender_id text, "
    "recipient_id text, text text, sent_at_ms bigint, traceparent text, src_partition int, "
    "src_offset bigint) ON COMMIT DELETE ROWS";

void sl_pgsink_pg_close(sl_pgsink *sink) {
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

/* Postgres failed for a reason other than the data: drop the batch, pause,
 * retry with exponential backoff. Logs once per state change. */
void sl_pgsink_pg_failed(sl_pgsink *sink, const char *why) {
    sl_pgsink_pg_close(sink);
    sl_pgsink_batch_clear(sink);
    sl_counter_add(sink->m.pg_failures, 1);
    int64_t now = sl_clock_mono_ms();
    if (sl_pgsink_state_get(sink) != SL_PGSINK_PAUSED_FOR_POSTGRES) {
        LOG(sink, SL_LOG_WARN,
            "postgres unavailable (%s): consumption paused, retrying with backoff", why);
        sink->paused_since_ms = now;
        sink->backoff_ms = sink->backoff_min_ms;
        sl_pgsink_set_state(sink, SL_PGSINK_PAUSED_FOR_POSTGRES);
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
bool sl_pgsink_pg_connect(sl_pgsink *sink) {
    char why[512];
    PGconn *conn = sl_pgsink_pg_open(sink->dsn, why, sizeof(why));
    if (conn && sl_pgsink_pg_run(conn, stage_ddl, 0, NULL, why, sizeof(why)) != PG_OK) {
        PQfinish(conn);
        conn = NULL;
    }
    if (!conn) {
        sl_pgsink_pg_failed(sink, why);
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
    sl_pgsink_set_state(sink,
                        sink->mode == SL_PGSINK_REBUILD ? SL_PGSINK_REBUILDING : SL_PGSINK_RUNNING);
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
        pg_res r = sl_pgsink_pg_classify(sink->pg, res, why, why_size);
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
    sl_pgsink_batch_clear(sink);
    pg_res r = load_offsets(sink, why, sizeof(why));
    if (r != PG_OK) {
        sl_pgsink_pg_failed(sink, why);
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
                pg_res r = sl_pgsink_pg_classify(sink->pg, res, why, why_size);
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
    pg_res r = sl_pgsink_pg_run(sink->pg, "BEGIN", 0, NULL, why, why_size);
    if (r == PG_OK && sink->n_rows > 0) {
        bool direct = sink->direct_skip == 0;
        if (sink->direct_skip > 0)
            sink->direct_skip--;
        r = sl_pgsink_write_rows(sink, 0, sink->n_rows, false, direct, why, why_size);
        if (r == PG_DATA && direct) {
            /* A row exists already (a key repeated across batches) or is
             * refused: redo the batch through the stage, which handles both,
             * and stay there for a while so repeats cost one failed COPY
             * per DIRECT_SKIP_BATCHES batches at most. */
            LOG(sink, SL_LOG_DEBUG, "direct COPY of %zu rows refused (%s): using the stage",
                sink->n_rows, why);
            sink->direct_skip = DIRECT_SKIP_BATCHES;
            sl_pgsink_pg_run(sink->pg, "ROLLBACK", 0, NULL, ignored, sizeof(ignored));
            r = sl_pgsink_pg_run(sink->pg, "BEGIN", 0, NULL, why, why_size);
            if (r == PG_OK)
                r = sl_pgsink_write_rows(sink, 0, sink->n_rows, false, false, why, why_size);
        }
        if (r == PG_DATA) {
            LOG(sink, SL_LOG_INFO, "batch of %zu rows refused (%s): isolating the bad rows",
                sink->n_rows, why);
            sl_pgsink_pg_run(sink->pg, "ROLLBACK", 0, NULL, ignored, sizeof(ignored));
            r = sl_pgsink_pg_run(sink->pg, "BEGIN", 0, NULL, why, why_size);
            if (r == PG_OK)
                r = sl_pgsink_write_range(sink, 0, sink->n_rows, why, why_size);
        }
    }
    if (r == PG_OK)
        r = store_offsets(sink, why, why_size);
    if (r == PG_OK && sink->n_dlq > 0 && !produce_dlq(sink, why, why_size))
        r = PG_CONFLICT; /* not Postgres' fault: roll back and re-read the batch */
    if (r == PG_OK)
        r = sl_pgsink_pg_run(sink->pg, "COMMIT", 0, NULL, why, why_size);
    else if (PQstatus(sink->pg) == CONNECTION_OK)
        sl_pgsink_pg_run(sink->pg, "ROLLBACK", 0, NULL, ignored, sizeof(ignored));
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
        sl_pgsink_batch_clear(sink);
    } else if (r == PG_CONFLICT) {
        LOG(sink, SL_LOG_WARN, "batch rolled back (%s): re-reading offsets from postgres", why);
        sl_pgsink_batch_clear(sink);
        sink->need_resync = true;
        sink->pg_retry_at_ms = sl_clock_mono_ms() + sink->backoff_min_ms;
    } else {
        sl_pgsink_pg_failed(sink, why);
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
    sl_pgsink_decode_record(sink, i, t);
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
        sl_pgsink_batch_clear(sink);
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

rd_kafka_t *sl_pgsink_new_consumer(sl_pgsink *sink, const char *group, bool group_mode,
                                   char *errstr, size_t errstr_size) {
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
    sink->consumer = sl_pgsink_new_consumer(sink, sink->group_id, true, errstr, errstr_size);
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

void sl_pgsink_close_consumer(sl_pgsink *sink) {
    if (!sink->consumer)
        return;
    if (sink->group_mode)
        rd_kafka_consumer_close(sink->consumer); /* runs the revoke callback */
    sl_pgsink_batch_clear(sink);
    rd_kafka_destroy(sink->consumer);
    sink->consumer = NULL;
    for (int t = 0; t < N_TOPICS; t++)
        for (int p = 0; p < MAX_PARTITIONS; p++)
            sink->parts[t][p] = (part_state){.committed_next = -1, .pending_next = -1};
}

void sl_pgsink_update_lag(sl_pgsink *sink) {
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

bool sl_pgsink_all_at_end(const sl_pgsink *sink) {
    for (int t = 0; t < N_TOPICS; t++)
        for (int p = 0; p < sink->n_partitions[t]; p++)
            if (!sink->parts[t][p].eof)
                return false;
    return true;
}

/* One loop iteration: reconnect, resync, poll, flush on size or linger. */
void sl_pgsink_step(sl_pgsink *sink) {
    int64_t now = sl_clock_mono_ms();
    if (!sink->pg && now >= sink->pg_retry_at_ms)
        sl_pgsink_pg_connect(sink);
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
        (sink->n_msgs > 0 && !sink->group_mode && sl_pgsink_all_at_end(sink)))
        flush(sink);
}

sl_err sl_pgsink_run(sl_pgsink *sink, volatile sig_atomic_t *stop) {
    char errstr[512];
    sl_err err = sl_pgsink_start_kafka(sink, errstr, sizeof(errstr));
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
        sl_pgsink_pg_failed(sink, errstr);
        sl_pgsink_wait_for_pg(sink, stop); /* connects only when Postgres answers again */
        sl_pgsink_pg_close(sink);
    }
    if (sink->mode == SL_PGSINK_REBUILD && !sl_pgsink_rebuild(sink, stop, errstr, sizeof(errstr))) {
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
        sl_pgsink_step(sink);
        int64_t now = sl_clock_mono_ms();
        if (now - last_lag >= 1000) {
            last_lag = now;
            sl_pgsink_update_lag(sink);
        }
    }
    flush(sink);
    sl_pgsink_close_consumer(sink);
    LOG(sink, SL_LOG_INFO, "stopped");
    return SL_OK;
}
