/*
 * tables.c: the Postgres sink's connections and tables: opening a
 * connection, the schema migrations (schemas/postgres, applied at every
 * start under an advisory lock), and the rebuild, which fills
 * users_rebuild/messages_rebuild from the beginning of the topics and swaps
 * them in with their offsets in one transaction.
 */
#include "connectors/postgres/sink.h"
#include "connectors/postgres/sink_int.h"
#include "processor/base/clock.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *const sl_pgsink_default_tables[N_TOPICS] = {"users", "messages"};
static const char *const rebuild_tables[N_TOPICS] = {"users_rebuild", "messages_rebuild"};

struct sl_pg_migration {
    const char *name;
    const char *sql;
};
extern const struct sl_pg_migration sl_pg_migrations[]; /* generated from schemas/postgres */

/* libpq prints NOTICEs to stderr by default; library code never prints. */
static void ignore_notice(void *arg, const char *message) {
    (void)arg;
    (void)message;
}

/* libpq connection with a bounded connect time; the user's DSN wins for every
 * key it sets. NULL + why on failure. */
PGconn *sl_pgsink_pg_open(const char *dsn, char *why, size_t why_size) {
    const char *keys[] = {"connect_timeout", "application_name", "dbname", NULL};
    const char *values[] = {"5", "sluice-pgsink", dsn, NULL};
    PGconn *conn = PQconnectdbParams(keys, values, 1);
    if (!conn) {
        snprintf(why, why_size, "out of memory");
        return NULL;
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        sl_pgsink_pg_classify(conn, NULL, why, why_size);
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
    PGconn *conn = sl_pgsink_pg_open(dsn, why, sizeof(why));
    if (!conn)
        return sl_fail(errstr, errstr_size, SL_ERR_IO, "postgres: %s", why);
    sl_err err = SL_OK;
    const char *lock_params[] = {MIGRATION_LOCK};
    /* A session-level lock: concurrent sinks apply migrations one at a time,
     * and a crash releases it with the connection. */
    if (sl_pgsink_pg_run(conn, "SELECT pg_advisory_lock($1::bigint)", 1, lock_params, why,
                         sizeof(why)) ||
        sl_pgsink_pg_run(conn,
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
            sl_pgsink_pg_classify(conn, res, why, sizeof(why));
        PQclear(res);
        if (!ok) {
            err = sl_fail(errstr, errstr_size, SL_ERR_IO, "postgres: migrations: %s", why);
            goto done;
        }
        if (done_before)
            continue;
        if (sl_pgsink_pg_run(conn, "BEGIN", 0, NULL, why, sizeof(why)) ||
            sl_pgsink_pg_run(conn, mig->sql, 0, NULL, why, sizeof(why)) ||
            sl_pgsink_pg_run(conn,
                             "INSERT INTO sluice_schema_version (version, name) VALUES ($1, $2)", 2,
                             params, why, sizeof(why)) ||
            sl_pgsink_pg_run(conn, "COMMIT", 0, NULL, why, sizeof(why))) {
            char ignored[64];
            sl_pgsink_pg_run(conn, "ROLLBACK", 0, NULL, ignored, sizeof(ignored));
            err = sl_fail(errstr, errstr_size, SL_ERR_IO, "postgres: migration %s: %s", mig->name,
                          why);
            goto done;
        }
        sl_log(logger, SL_LOG_INFO, COMPONENT, "applied migration %s", mig->name);
        if (applied)
            (*applied)++;
    }
done:
    sl_pgsink_pg_run(conn, "SELECT pg_advisory_unlock($1::bigint)", 1, lock_params, why,
                     sizeof(why));
    PQfinish(conn);
    return err;
}

static pg_res rebuild_prepare(sl_pgsink *sink, char *why, size_t why_size) {
    const char *params[] = {sink->offsets_group};
    pg_res r;
    if ((r = sl_pgsink_pg_run(sink->pg,
                              "DROP TABLE IF EXISTS users_rebuild, messages_rebuild CASCADE", 0,
                              NULL, why, why_size)) ||
        (r = sl_pgsink_pg_run(sink->pg, "DELETE FROM sluice_sink_offsets WHERE group_id = $1", 1,
                              params, why, why_size)) ||
        (r = sl_pgsink_pg_run(sink->pg, "SELECT sluice_create_users_table('users_rebuild')", 0,
                              NULL, why, why_size)) ||
        (r = sl_pgsink_pg_run(
             sink->pg,
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
    if ((r = sl_pgsink_pg_run(sink->pg, "BEGIN", 0, NULL, why, why_size)) ||
        (r = sl_pgsink_pg_run(sink->pg, "SELECT sluice_swap_table('users_rebuild', 'users')", 0,
                              NULL, why, why_size)) ||
        (r = sl_pgsink_pg_run(sink->pg, "SELECT sluice_swap_table('messages_rebuild', 'messages')",
                              0, NULL, why, why_size)) ||
        (r = sl_pgsink_pg_run(sink->pg, "DELETE FROM sluice_sink_offsets WHERE group_id = $1", 1,
                              params, why, why_size)) ||
        (r = sl_pgsink_pg_run(sink->pg,
                              "UPDATE sluice_sink_offsets SET group_id = $1, updated_at = now() "
                              "WHERE group_id = $2",
                              2, params, why, why_size)) ||
        (r = sl_pgsink_pg_run(sink->pg, "COMMIT", 0, NULL, why, why_size))) {
        if (PQstatus(sink->pg) == CONNECTION_OK)
            sl_pgsink_pg_run(sink->pg, "ROLLBACK", 0, NULL, ignored, sizeof(ignored));
        return r;
    }
    return PG_OK;
}

void sl_pgsink_wait_for_pg(sl_pgsink *sink, volatile sig_atomic_t *stop) {
    while (!*stop && !sink->pg) {
        int64_t left = sink->pg_retry_at_ms - sl_clock_mono_ms();
        if (left > 0) {
            struct timespec ts = {.tv_sec = 0, .tv_nsec = (left > 100 ? 100 : left) * 1000000};
            nanosleep(&ts, NULL);
            continue;
        }
        sl_pgsink_pg_connect(sink);
    }
}

/* Build users_rebuild/messages_rebuild from the beginning of the topics with
 * an assign-only consumer (running sinks keep serving the old tables), then
 * swap. Returns false only when stopped first. */
bool sl_pgsink_rebuild(sl_pgsink *sink, volatile sig_atomic_t *stop, char *errstr,
                       size_t errstr_size) {
    sl_pgsink_set_state(sink, SL_PGSINK_REBUILDING);
    snprintf(sink->offsets_group, sizeof(sink->offsets_group), "%s/rebuild", sink->group_id);
    char why[512];
    for (;;) {
        sl_pgsink_wait_for_pg(sink, stop);
        if (*stop)
            return false;
        pg_res r = rebuild_prepare(sink, why, sizeof(why));
        if (r == PG_OK)
            break;
        sl_pgsink_pg_failed(sink, why);
    }
    for (int t = 0; t < N_TOPICS; t++)
        sink->tables[t] = rebuild_tables[t];
    char rebuild_group[320];
    snprintf(rebuild_group, sizeof(rebuild_group), "%s-rebuild", sink->group_id);
    sink->consumer = sl_pgsink_new_consumer(sink, rebuild_group, false, errstr, errstr_size);
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
        sl_pgsink_step(sink);
        int64_t now = sl_clock_mono_ms();
        if (now - last_log >= 5000) {
            last_log = now;
            sl_pgsink_update_lag(sink);
            LOG(sink, SL_LOG_INFO,
                "rebuild: %" PRId64 " rows in %.0f s (%.0f rows/s), %.0f records behind",
                sink->rows_total, (double)(now - started) / 1000.0,
                (double)sink->rows_total * 1000.0 / (double)(now - started + 1),
                sl_gauge_value(sink->m.lag));
        }
        if (sink->pg && !sink->need_resync && sink->n_msgs == 0 && sl_pgsink_all_at_end(sink)) {
            pg_res r = rebuild_swap(sink, why, sizeof(why));
            if (r == PG_OK)
                break;
            sl_pgsink_pg_failed(sink, why);
        }
    }
    if (*stop)
        return false;
    LOG(sink, SL_LOG_INFO,
        "rebuild: %" PRId64 " rows in %.1f s; new tables swapped in, continuing as the group",
        sink->rows_total, (double)(sl_clock_mono_ms() - started) / 1000.0);
    sl_pgsink_close_consumer(sink);
    for (int t = 0; t < N_TOPICS; t++)
        sink->tables[t] = sl_pgsink_default_tables[t];
    snprintf(sink->offsets_group, sizeof(sink->offsets_group), "%s", sink->group_id);
    sink->mode = SL_PGSINK_RUN;
    sl_pgsink_set_state(sink, SL_PGSINK_RUNNING);
    return true;
}
