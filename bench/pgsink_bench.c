/*
 * pgsink_bench: rows/s of the Postgres sink against a raw COPY of the same
 * rows into the same table, in the same run (target: sink >= 80% of raw).
 *
 *   make bench-pgsink [ARGS="--rows N"]     (runs under scripts/harness)
 *
 * Needs SLUICE_TEST_KAFKA_BOOTSTRAP and SLUICE_TEST_PG_DSN (the harness sets
 * them). Steps: a fresh database with the sink's migrations; N MessageSent
 * events produced transactionally to a fresh 4-partition topic; then
 *   raw:  the same N rows, in transactions of the sink's batch size (5000),
 *         straight into `messages` (same table, partitions and index as the
 *         sink writes), once as COPY text and once as COPY BINARY (the
 *         sink's format), each followed by TRUNCATE; timed, building the
 *         COPY data included (the sink's time includes decoding too);
 *   sink: the sink (in this process, default settings) consumes the topic
 *         and writes `messages`; timed from its first committed batch to the
 *         last (Kafka group join excluded), rows of the first batch excluded;
 *   raw again, both formats, after the sink (the machine is shared: the
 *         sink is compared with the FASTEST of the four raw runs).
 */
#include <inttypes.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/support/benchutil.h"
#include "processor/cmd/config_groups.h"
#include "processor/kafka/admin.h"
#include "connectors/postgres/sink.h"
#include "processor/kafka/client.h"
#include "sluice/v1/dialogs.pb-c.h"

#define BATCH 5000

static void log_stderr(void *opaque, sl_log_level level, const char *component, const char *line) {
    (void)opaque;
    fprintf(stderr, "%s %s: %s\n", sl_log_level_name(level), component, line);
}
static const sl_logger logger = {.fn = log_stderr, .level = SL_LOG_WARN};

static void die(const char *what, const char *why) {
    fprintf(stderr, "pgsink_bench: %s: %s\n", what, why);
    exit(1);
}

/* Row i, identical for the topic and the raw COPY: 1000 dialogs. */
static void row_for(long i, char *dialog, size_t dsize, int64_t *seq, char *text, size_t tsize) {
    long d = i % 1000;
    snprintf(dialog, dsize, "u%05ld:u%05ld", d, d + 100000);
    *seq = i / 1000 + 1;
    snprintf(text, tsize, "message %ld: a typical short chat line, with some words in it", i);
}

static void exec_or_die(PGconn *conn, const char *sql) {
    PGresult *res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
        die(sql, PQerrorMessage(conn));
    PQclear(res);
}

static void produce_all(const char *bootstrap, const char *topic, long rows) {
    char errstr[512];
    rd_kafka_conf_t *conf =
        sl_kafka_conf_new(RD_KAFKA_PRODUCER, bootstrap, NULL, &logger, errstr, sizeof(errstr));
    if (!conf || sl_kafka_conf_set(conf, "transactional.id", topic, errstr, sizeof(errstr)) ||
        sl_kafka_conf_set(conf, "linger.ms", "20", errstr, sizeof(errstr)))
        die("producer config", errstr);
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!p)
        die("producer", errstr);
    rd_kafka_error_t *error = rd_kafka_init_transactions(p, 60000);
    if (error)
        die("init_transactions", rd_kafka_error_string(error));
    for (long i = 0; i < rows;) {
        if ((error = rd_kafka_begin_transaction(p)))
            die("begin", rd_kafka_error_string(error));
        for (int k = 0; k < 10000 && i < rows; k++, i++) {
            char dialog[32], text[128];
            Sluice__V1__MessageSent ms = SLUICE__V1__MESSAGE_SENT__INIT;
            row_for(i, dialog, sizeof(dialog), &ms.sequence, text, sizeof(text));
            ms.dialog_id = dialog;
            ms.sender_id = dialog + 7; /* the higher user id */
            ms.recipient_id = dialog + 0;
            ms.text = text;
            ms.sent_at_ms = 1700000000000LL + i;
            Sluice__V1__DialogsEvent ev = SLUICE__V1__DIALOGS_EVENT__INIT;
            ev.event_case = SLUICE__V1__DIALOGS_EVENT__EVENT_MESSAGE_SENT;
            ev.message_sent = &ms;
            uint8_t buf[512];
            size_t len = sluice__v1__dialogs_event__pack(&ev, buf);
            rd_kafka_resp_err_t err;
            while ((err = rd_kafka_producev(
                        p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(dialog, strlen(dialog)),
                        RD_KAFKA_V_VALUE(buf, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                        RD_KAFKA_V_END)) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
                rd_kafka_poll(p, 10);
            if (err)
                die("produce", rd_kafka_err2str(err));
        }
        if ((error = rd_kafka_commit_transaction(p, 60000)))
            die("commit", rd_kafka_error_string(error));
    }
    rd_kafka_destroy(p);
}

static size_t put_be(char *buf, uint64_t v, size_t bytes) {
    for (size_t i = 0; i < bytes; i++)
        buf[i] = (char)(v >> (8 * (bytes - 1 - i)));
    return bytes;
}

static size_t put_bin_text(char *buf, const char *s) {
    size_t n = strlen(s);
    put_be(buf, n, 4);
    memcpy(buf + 4, s, n);
    return 4 + n;
}

/* Row i as one COPY BINARY tuple (6 fields). */
static size_t binary_row(char *buf, long i) {
    char dialog[32], text[128];
    int64_t seq;
    row_for(i, dialog, sizeof(dialog), &seq, text, sizeof(text));
    int64_t us = (1700000000000LL + i - 946684800000LL) * 1000; /* since 2000-01-01 */
    size_t len = put_be(buf, 6, 2);
    len += put_bin_text(buf + len, dialog);
    len += put_be(buf + len, 8, 4);
    len += put_be(buf + len, (uint64_t)seq, 8);
    len += put_bin_text(buf + len, dialog + 7);
    len += put_bin_text(buf + len, dialog);
    len += put_bin_text(buf + len, text);
    len += put_be(buf + len, 8, 4);
    len += put_be(buf + len, (uint64_t)us, 8);
    return len;
}

/* The rows as the sink writes them, sent with COPY (text or binary) in
 * BATCH-row transactions. Returns the seconds spent (building the data
 * included). */
static double raw_copy(PGconn *conn, long rows, bool binary) {
    size_t cap = (size_t)BATCH * 256;
    char *buf = malloc(cap);
    if (!buf)
        die("raw copy", "out of memory");
    double t0 = bench_now_s();
    for (long i = 0; i < rows;) {
        size_t len = 0;
        if (binary) {
            memcpy(buf, "PGCOPY\n\377\r\n\0\0\0\0\0\0\0\0\0", 19);
            len = 19;
            for (int k = 0; k < BATCH && i < rows; k++, i++)
                len += binary_row(buf + len, i);
            len += put_be(buf + len, 0xffff, 2);
        }
        for (int k = 0; !binary && k < BATCH && i < rows; k++, i++) {
            char dialog[32], text[128];
            int64_t seq;
            row_for(i, dialog, sizeof(dialog), &seq, text, sizeof(text));
            int64_t ms = 1700000000000LL + i;
            time_t secs = (time_t)(ms / 1000);
            struct tm tm;
            gmtime_r(&secs, &tm);
            char stamp[40];
            strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", &tm);
            /* No escaping needed: the generated texts hold no \ \t \n \r. */
            len +=
                (size_t)snprintf(buf + len, cap - len, "%s\t%" PRId64 "\t%s\t%s\t%s\t%s.%03d+00\n",
                                 dialog, seq, dialog + 7, dialog, text, stamp, (int)(ms % 1000));
        }
        exec_or_die(conn, "BEGIN");
        PGresult *res =
            PQexec(conn, binary ? "COPY messages (dialog_id, sequence, sender_id, recipient_id, "
                                  "text, sent_at) FROM STDIN (FORMAT binary)"
                                : "COPY messages (dialog_id, sequence, sender_id, recipient_id, "
                                  "text, sent_at) FROM STDIN");
        if (PQresultStatus(res) != PGRES_COPY_IN)
            die("COPY", PQerrorMessage(conn));
        PQclear(res);
        if (PQputCopyData(conn, buf, (int)len) != 1 || PQputCopyEnd(conn, NULL) != 1)
            die("COPY data", PQerrorMessage(conn));
        while ((res = PQgetResult(conn))) {
            if (PQresultStatus(res) != PGRES_COMMAND_OK)
                die("COPY end", PQerrorMessage(conn));
            PQclear(res);
        }
        exec_or_die(conn, "COMMIT");
    }
    double spent = bench_now_s() - t0;
    free(buf);
    return spent;
}

/* One timed raw COPY of every row into the empty table, then TRUNCATE and
 * VACUUM ANALYZE so the next writer finds the same empty table. rows/s. */
static double raw_pass(PGconn *conn, long rows, bool binary) {
    double rate = (double)rows / raw_copy(conn, rows, binary);
    PGresult *res = PQexec(conn, "SELECT count(*) FROM messages");
    if (PQresultStatus(res) != PGRES_TUPLES_OK || strtol(PQgetvalue(res, 0, 0), NULL, 10) != rows)
        die("raw copy", "the table does not hold every row");
    PQclear(res);
    exec_or_die(conn, "TRUNCATE messages");
    exec_or_die(conn, "VACUUM ANALYZE messages");
    return rate;
}

typedef struct sink_thread {
    sl_pgsink *sink;
    volatile sig_atomic_t stop;
} sink_thread;

static void *run_sink(void *arg) {
    sink_thread *st = arg;
    sl_pgsink_run(st->sink, &st->stop);
    return NULL;
}

int main(int argc, char **argv) {
    long rows = 200000;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--rows") == 0 && i + 1 < argc)
            rows = strtol(argv[++i], NULL, 10);
    const char *bootstrap = getenv("SLUICE_TEST_KAFKA_BOOTSTRAP");
    const char *base_dsn = getenv("SLUICE_TEST_PG_DSN");
    if (!bootstrap || !base_dsn || rows < 2 * BATCH)
        die("usage", "run under scripts/harness; --rows N with N >= 10000");

    char db[64], dsn[512], app_id[96], topic[160], users_topic[160], errstr[512];
    snprintf(db, sizeof(db), "pgsink_bench_%d", (int)getpid());
    snprintf(app_id, sizeof(app_id), "pgsink-bench-%d", (int)getpid());
    snprintf(topic, sizeof(topic), "%s.dialogs.events", app_id);
    snprintf(users_topic, sizeof(users_topic), "%s.users.events", app_id);
    PGconn *root = PQconnectdb(base_dsn);
    if (PQstatus(root) != CONNECTION_OK)
        die("postgres", PQerrorMessage(root));
    char sql[128];
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", db);
    exec_or_die(root, sql);
    const char *slash = strrchr(base_dsn, '/');
    snprintf(dsn, sizeof(dsn), "%.*s/%s", (int)(slash - base_dsn), base_dsn, db);
    if (sl_pgsink_migrate(dsn, &logger, NULL, errstr, sizeof(errstr)))
        die("migrate", errstr);
    PGconn *conn = PQconnectdb(dsn);
    if (PQstatus(conn) != CONNECTION_OK)
        die("postgres", PQerrorMessage(conn));

    rd_kafka_conf_t *conf =
        sl_kafka_conf_new(RD_KAFKA_PRODUCER, bootstrap, NULL, &logger, errstr, sizeof(errstr));
    rd_kafka_t *admin = conf ? rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr)) : NULL;
    if (!admin)
        die("kafka", errstr);
    for (int i = 0; i < 2; i++) {
        sl_topic_spec spec = {
            .name = i ? topic : users_topic, .partitions = 4, .replication_factor = -1};
        if (sl_admin_ensure_topic(admin, &spec, 30000, errstr, sizeof(errstr)))
            die("topic", errstr);
    }
    rd_kafka_destroy(admin);
    double t = bench_now_s();
    produce_all(bootstrap, topic, rows);
    fprintf(stderr, "produced %ld events in %.1f s\n", rows, bench_now_s() - t);

    double raw_rate[2][2]; /* [before/after the sink][text/binary] */
    for (int format = 0; format < 2; format++)
        raw_rate[0][format] = raw_pass(conn, rows, format == 1);

    sl_config *config = sl_config_new(sl_config_groups, NULL, 0);
    char port[] = "0";
    const char *settings[][2] = {
        {"bootstrap.servers", bootstrap},     {"pg.dsn", dsn},
        {"application.id", app_id},           {"pg.sink.messages.topic", topic},
        {"pg.sink.users.topic", users_topic}, {"http.port", port}};
    for (size_t i = 0; i < sizeof(settings) / sizeof(settings[0]); i++)
        if (!config ||
            sl_config_set(config, settings[i][0], settings[i][1], errstr, sizeof(errstr)))
            die("config", errstr);
    sink_thread st = {0};
    st.sink = sl_pgsink_new(config, &logger, SL_PGSINK_RUN, errstr, sizeof(errstr));
    if (!st.sink)
        die("sink", errstr);
    pthread_t thread;
    pthread_create(&thread, NULL, run_sink, &st);
    double first_t = 0, last_t = 0, deadline = bench_now_s() + 600;
    unsigned long long first_rows = 0, n;
    while ((n = sl_pgsink_rows_written(st.sink)) < (unsigned long long)rows &&
           bench_now_s() < deadline) {
        if (n > 0 && first_rows == 0) {
            first_rows = n;
            first_t = bench_now_s();
        }
        usleep(500);
    }
    last_t = bench_now_s();
    st.stop = 1;
    pthread_join(thread, NULL);
    sl_pgsink_destroy(st.sink);
    sl_config_destroy(config);
    if (n < (unsigned long long)rows)
        die("sink", "did not write every row within 600 s");
    double sink_rate = (double)(n - first_rows) / (last_t - first_t);
    PGresult *res = PQexec(conn, "SELECT count(*) FROM messages");
    long in_table = strtol(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    exec_or_die(conn, "TRUNCATE messages");
    exec_or_die(conn, "VACUUM ANALYZE messages");
    for (int format = 0; format < 2; format++)
        raw_rate[1][format] = raw_pass(conn, rows, format == 1);
    double best_raw = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int format = 0; format < 2; format++)
            if (raw_rate[pass][format] > best_raw)
                best_raw = raw_rate[pass][format];

    printf("rows:             %ld (4 partitions, batches of %d rows)\n", rows, BATCH);
    printf("raw COPY text:    %.0f rows/s before the sink, %.0f after\n", raw_rate[0][0],
           raw_rate[1][0]);
    printf("raw COPY binary:  %.0f rows/s before the sink, %.0f after\n", raw_rate[0][1],
           raw_rate[1][1]);
    printf("sink:             %.0f rows/s (%.2f s for %llu rows after the first batch)\n",
           sink_rate, last_t - first_t, n - first_rows);
    printf("sink / best raw:  %.0f%% (target >= 80%%)\n", 100.0 * sink_rate / best_raw);
    printf("rows in table:    %ld\n", in_table);
    PQfinish(conn);
    snprintf(sql, sizeof(sql), "DROP DATABASE %s", db);
    exec_or_die(root, sql);
    PQfinish(root);
    return in_table == rows ? 0 : 1;
}
