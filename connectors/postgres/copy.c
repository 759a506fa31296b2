/*
 * copy.c: the Postgres sink's writer (see the design note in sink.c):
 * statements and their classification, COPY text and COPY BINARY of the
 * batch's rows, the direct write of messages, the staged upsert, and the
 * bisection under savepoints that isolates the rows Postgres refuses.
 */
#include "connectors/postgres/sink.h"
#include "connectors/postgres/sink_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "processor/base/trace.h"
#include "sluice/v1/dialogs.pb-c.h"
#include "sluice/v1/identity.pb-c.h"

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
pg_res sl_pgsink_pg_classify(PGconn *conn, const PGresult *res, char *why, size_t why_size) {
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

pg_res sl_pgsink_pg_run(PGconn *conn, const char *sql, int n_params, const char *const *params,
                        char *why, size_t why_size) {
    PGresult *res = n_params ? PQexecParams(conn, sql, n_params, NULL, params, NULL, NULL, 0)
                             : PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    pg_res r = PG_OK;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        r = sl_pgsink_pg_classify(conn, res, why, why_size);
    PQclear(res);
    return r;
}

/* The event's traceparent header into out (a NUL-terminated copy), or
 * NULL when it has none or an invalid one. */
static const char *event_trace(const rd_kafka_message_t *m, char out[SL_TRACEPARENT_LEN + 1]) {
    rd_kafka_headers_t *headers = NULL;
    const void *value = NULL;
    size_t len = 0;
    if (rd_kafka_message_headers(m, &headers) || !headers ||
        rd_kafka_header_get_last(headers, SL_TRACEPARENT_HEADER, &value, &len) ||
        !sl_traceparent_valid(value, len))
        return NULL;
    memcpy(out, value, SL_TRACEPARENT_LEN);
    out[SL_TRACEPARENT_LEN] = '\0';
    return out;
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
        char trace_buf[SL_TRACEPARENT_LEN + 1];
        const char *trace = event_trace(m, trace_buf);
        ok = ok && (trace ? buf_field(b, trace, '\t') : buf_put(b, "\\N\t", 3)) &&
             buf_int(b, m->partition, '\t') && buf_int(b, m->offset, '\n');
        if (!ok)
            return false;
        (*n)++;
    }
    return true;
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
        char trace_buf[SL_TRACEPARENT_LEN + 1];
        const char *trace = event_trace(sink->msgs[row->msg].m, trace_buf);
        if (!buf_be(b, 7, 2) || !buf_bin_text(b, ms->dialog_id) || !buf_bin_int8(b, ms->sequence) ||
            !buf_bin_text(b, ms->sender_id) || !buf_bin_text(b, ms->recipient_id) ||
            !buf_bin_text(b, ms->text) || !buf_bin_timestamptz_ms(b, ms->sent_at_ms) ||
            !(trace ? buf_bin_text(b, trace) : buf_be(b, 0xffffffffu, 4))) /* -1: NULL */
            return false;
        (*n)++;
    }
    return buf_be(b, 0xffff, 2); /* trailer: field count -1 */
}

static pg_res copy_in(sl_pgsink *sink, const char *sql, char *why, size_t why_size) {
    PGresult *res = PQexec(sink->pg, sql);
    if (PQresultStatus(res) != PGRES_COPY_IN) {
        pg_res r = sl_pgsink_pg_classify(sink->pg, res, why, why_size);
        PQclear(res);
        return r == PG_OK ? PG_RETRY : r;
    }
    PQclear(res);
    int put = PQputCopyData(sink->pg, sink->copy.data, (int)sink->copy.len);
    int end = PQputCopyEnd(sink->pg, put == 1 ? NULL : "sluice: sending COPY data failed");
    pg_res r = PG_OK;
    while ((res = PQgetResult(sink->pg)) != NULL) {
        if (r == PG_OK && PQresultStatus(res) != PGRES_COMMAND_OK)
            r = sl_pgsink_pg_classify(sink->pg, res, why, why_size);
        PQclear(res);
    }
    if (r == PG_OK && (put != 1 || end != 1))
        r = sl_pgsink_pg_classify(sink->pg, NULL, why, why_size);
    return r;
}

/* The whole batch's messages, deduplicated in C, by COPY BINARY straight
 * into the table: no stage, no sort, no speculative insertion. Any row that
 * already exists fails the COPY (unique_violation, class 23), as does a row
 * Postgres refuses: the caller then rolls back and takes the staged path. */
static pg_res write_messages_direct(sl_pgsink *sink, char *why, size_t why_size) {
    size_t n;
    sl_pgsink_dedupe_messages(sink);
    if (!build_copy_messages_binary(sink, &n)) {
        snprintf(why, why_size, "COPY buffer over %zu bytes", COPY_BUF_CAP);
        return PG_RETRY;
    }
    if (n == 0)
        return PG_OK;
    char sql[256];
    snprintf(sql, sizeof(sql),
             "COPY %s (dialog_id, sequence, sender_id, recipient_id, text, sent_at, "
             "traceparent) FROM STDIN (FORMAT binary)",
             sink->tables[T_MESSAGES]);
    return copy_in(sink, sql, why, why_size);
}

/* Rows [lo, hi): COPY into the stage tables, upsert into the targets, empty
 * the stages (they are reused within the transaction by write_range). With
 * direct, the messages take write_messages_direct instead (lo..hi must be
 * the whole batch). */
pg_res sl_pgsink_write_rows(sl_pgsink *sink, size_t lo, size_t hi, bool empty_stage, bool direct,
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
                     "INSERT INTO %s (dialog_id, sequence, sender_id, recipient_id, text, sent_at, "
                     "traceparent) "
                     "SELECT DISTINCT ON (dialog_id, sequence) dialog_id, sequence, sender_id, "
                     "recipient_id, text, timestamptz 'epoch' + sent_at_ms * interval '1 ms', "
                     "traceparent "
                     "FROM sluice_stage_messages ORDER BY dialog_id, sequence, src_offset DESC "
                     "ON CONFLICT (dialog_id, sequence) DO NOTHING",
                     sink->tables[t]);
        else
            snprintf(sql, sizeof(sql),
                     "INSERT INTO %s AS u (id, email, first_name, second_name, birthdate, "
                     "biography, city, created_at, traceparent) "
                     "SELECT DISTINCT ON (id) id, email, first_name, second_name, "
                     "birthdate::date, biography, city, "
                     "timestamptz 'epoch' + created_at_ms * interval '1 ms', traceparent "
                     "FROM sluice_stage_users ORDER BY id, src_partition DESC, src_offset DESC "
                     "ON CONFLICT (id) DO UPDATE SET email = excluded.email, "
                     "first_name = excluded.first_name, second_name = excluded.second_name, "
                     "birthdate = excluded.birthdate, biography = excluded.biography, "
                     "city = excluded.city, created_at = excluded.created_at, "
                     "traceparent = excluded.traceparent "
                     "WHERE (u.email, u.first_name, u.second_name, u.birthdate, u.biography, "
                     "u.city, u.created_at) IS DISTINCT FROM (excluded.email, "
                     "excluded.first_name, excluded.second_name, excluded.birthdate, "
                     "excluded.biography, excluded.city, excluded.created_at)",
                     sink->tables[t]);
        if ((r = sl_pgsink_pg_run(sink->pg, sql, 0, NULL, why, why_size)) != PG_OK)
            return r;
        if (empty_stage &&
            (r = sl_pgsink_pg_run(sink->pg,
                                  t == T_MESSAGES ? "DELETE FROM sluice_stage_messages"
                                                  : "DELETE FROM sluice_stage_users",
                                  0, NULL, why, why_size)) != PG_OK)
            return r;
    }
    return PG_OK;
}

/* Bisection under savepoints: keep what Postgres accepts, dead-letter each
 * single row it refuses, with its SQL error. */
pg_res sl_pgsink_write_range(sl_pgsink *sink, size_t lo, size_t hi, char *why, size_t why_size) {
    if (lo >= hi)
        return PG_OK;
    pg_res r = sl_pgsink_pg_run(sink->pg, "SAVEPOINT sluice_rows", 0, NULL, why, why_size);
    if (r != PG_OK)
        return r;
    r = sl_pgsink_write_rows(sink, lo, hi, true, false, why, why_size);
    if (r == PG_OK)
        return sl_pgsink_pg_run(sink->pg, "RELEASE SAVEPOINT sluice_rows", 0, NULL, why, why_size);
    if (r != PG_DATA)
        return r;
    char row_error[480];
    snprintf(row_error, sizeof(row_error), "%s", why);
    if ((r = sl_pgsink_pg_run(sink->pg, "ROLLBACK TO SAVEPOINT sluice_rows", 0, NULL, why,
                              why_size)) ||
        (r = sl_pgsink_pg_run(sink->pg, "RELEASE SAVEPOINT sluice_rows", 0, NULL, why, why_size)))
        return r;
    if (hi - lo == 1) {
        const rd_kafka_message_t *m = sink->msgs[sink->rows[lo].msg].m;
        LOG(sink, SL_LOG_WARN, "postgres refused the row of %s [%d] @%lld: %s",
            rd_kafka_topic_name(m->rkt), (int)m->partition, (long long)m->offset, row_error);
        char reason[512];
        snprintf(reason, sizeof(reason), "postgres: %s", row_error);
        sl_pgsink_add_dlq(sink, sink->rows[lo].msg, reason);
        return PG_OK;
    }
    size_t mid = lo + (hi - lo) / 2;
    r = sl_pgsink_write_range(sink, lo, mid, why, why_size);
    return r != PG_OK ? r : sl_pgsink_write_range(sink, mid, hi, why, why_size);
}
