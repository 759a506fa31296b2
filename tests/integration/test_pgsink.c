/*
 * Postgres sink system tests against the real broker and PostgreSQL of the
 * harness. The sink runs as the real `sluice sink` binary in a child process
 * (so it can be killed with SIGKILL); the test produces events
 * transactionally, as the processor does, and compares the tables with the
 * topics read back with read_committed.
 *
 * Each test uses its own database (created here) and its own topics, so the
 * tests are independent of each other and of the rest of the suite.
 * SLUICE_TEST_PGSINK_RECORDS sets the size of the kill test (default 100000).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <inttypes.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "processor/kafka/admin.h"
#include "connectors/postgres/sink.h"
#include "processor/kafka/client.h"
#include "sluice/v1/dialogs.pb-c.h"
#include "sluice/v1/identity.pb-c.h"
#include "tests/support/postgres.h"
#include "tests/support/broker.h"
#include "tests/support/instance.h"
#include "tests/support/testutil.h"

#define PARTITIONS 4

static char errstr[1024];

typedef struct scenario {
    char app_id[96];
    char users_topic[128], messages_topic[128], dlq_topic[160];
    char db[64];
    char dsn[200];
    PGconn *pg;
    test_instance sink;
} scenario;

/* ---- setup ------------------------------------------------------------- */

/* A fresh database per scenario: its DSN is the harness's with another
 * database name. */
static void scenario_init(scenario *sc, const char *name) {
    memset(sc, 0, sizeof(*sc));
    test_unique_name(sc->app_id, sizeof(sc->app_id), name);
    snprintf(sc->users_topic, sizeof(sc->users_topic), "%s.users.events", sc->app_id);
    snprintf(sc->messages_topic, sizeof(sc->messages_topic), "%s.dialogs.events", sc->app_id);
    snprintf(sc->dlq_topic, sizeof(sc->dlq_topic), "%s-dlq", sc->app_id);
    static int n;
    snprintf(sc->db, sizeof(sc->db), "pgsink_%d_%d", (int)getpid(), ++n);
    sc->pg = test_pg_create_database(sc->db, sc->dsn, sizeof(sc->dsn));
    test_broker_create_topic(test_admin, sc->users_topic, PARTITIONS, -1, NULL);
    test_broker_create_topic(test_admin, sc->messages_topic, PARTITIONS, -1, NULL);
}

static void scenario_free(scenario *sc) {
    test_instance_free(&sc->sink);
    if (sc->pg)
        PQfinish(sc->pg);
}

/* `sluice sink [rebuild]` as a child: tests/apps/../../sluice is the binary. */
static void sink_init(scenario *sc, test_instance *inst, const char *name, bool rebuild,
                      const char *batch_rows) {
    const char *const command[] = {"sink", rebuild ? "rebuild" : NULL, NULL};
    test_instance_init_sluice(inst, test_work_dir, name, command);
    test_instance_set(inst, "pg.dsn=%s", sc->dsn);
    test_instance_set(inst, "application.id=%s", sc->app_id);
    test_instance_set(inst, "pg.sink.users.topic=%s", sc->users_topic);
    test_instance_set(inst, "pg.sink.messages.topic=%s", sc->messages_topic);
    test_instance_set(inst, "pg.sink.batch.rows=%s", batch_rows);
    test_instance_set(inst, "pg.sink.retry.backoff.max.ms=1000");
    test_instance_set(inst, "kafka.consumer.session.timeout.ms=6000");
}

static void sink_start(scenario *sc, test_instance *inst) {
    (void)sc;
    test_instance_start_ready(inst, 60000, "sink");
}

/* The "state" field of the sink's /readyz. */
static void sink_state(test_instance *inst, char *out, size_t size) {
    char body[2048];
    out[0] = '\0';
    int status =
        test_http(inst->http_port, "GET", "/readyz", NULL, NULL, 0, NULL, 0, body, sizeof(body));
    if (status != 200 && status != 503)
        return;
    json_t *root = json_loads(body, 0, NULL);
    const char *s = json_string_value(json_object_get(root, "state"));
    snprintf(out, size, "%s", s ? s : "");
    json_decref(root);
}

/* ---- producing events -------------------------------------------------- */

typedef struct producer_job {
    const char *topic;
    long first, count; /* message indexes */
    int per_txn;
    char txn_id[128];
} producer_job;

/* Message i: 400 dialogs, sequences 1, 2, ... per dialog, and a text that
 * needs every COPY escape plus multi-byte UTF-8. */
static void message_for(long i, char *dialog, size_t dsize, int64_t *sequence, char *text,
                        size_t tsize) {
    long d = i % 400;
    snprintf(dialog, dsize, "u%04ld:u%04ld", d, d + 1000);
    *sequence = i / 400 + 1;
    snprintf(text, tsize, "msg %ld\ttab \\back\\slash\nnew line \r \"q\" 'a' привет ✓ %s", i,
             i % 7 == 0 ? "\\N" : "");
}

static void produce_value(rd_kafka_t *p, const char *topic, const char *key, const void *value,
                          size_t len) {
    assert_int_equal(test_broker_produce(p, topic, key, value, len), RD_KAFKA_RESP_ERR_NO_ERROR);
}

static void produce_message_sent(rd_kafka_t *p, const char *topic, const char *dialog,
                                 int64_t sequence, const char *text) {
    Sluice__V1__MessageSent ms = SLUICE__V1__MESSAGE_SENT__INIT;
    ms.dialog_id = (char *)dialog;
    ms.sequence = sequence;
    ms.sender_id = (char *)"sender";
    ms.recipient_id = (char *)"recipient";
    ms.text = (char *)text;
    ms.sent_at_ms = 1700000000000LL + sequence * 1001;
    Sluice__V1__DialogsEvent ev = SLUICE__V1__DIALOGS_EVENT__INIT;
    ev.event_case = SLUICE__V1__DIALOGS_EVENT__EVENT_MESSAGE_SENT;
    ev.message_sent = &ms;
    uint8_t buf[2048];
    size_t len = sluice__v1__dialogs_event__get_packed_size(&ev);
    assert_true(len <= sizeof(buf));
    sluice__v1__dialogs_event__pack(&ev, buf);
    produce_value(p, topic, dialog, buf, len);
}

static void commit_txn(rd_kafka_t *p) {
    rd_kafka_error_t *error = rd_kafka_commit_transaction(p, 60000);
    if (error)
        fail_msg("commit: %s", rd_kafka_error_string(error));
}

static void *producer_thread(void *arg) {
    producer_job *job = arg;
    rd_kafka_t *p = test_producer(test_kafka_bootstrap(), job->txn_id);
    for (long i = job->first; i < job->first + job->count;) {
        rd_kafka_error_t *error = rd_kafka_begin_transaction(p);
        if (error)
            fail_msg("begin: %s", rd_kafka_error_string(error));
        for (int k = 0; k < job->per_txn && i < job->first + job->count; k++, i++) {
            char dialog[32], text[256];
            int64_t seq;
            message_for(i, dialog, sizeof(dialog), &seq, text, sizeof(text));
            produce_message_sent(p, job->topic, dialog, seq, text);
        }
        commit_txn(p);
    }
    rd_kafka_destroy(p);
    return NULL;
}

/* ---- comparing the table with the topic -------------------------------- */

typedef struct expected_row {
    char dialog[32];
    int64_t sequence;
    char sender[32], recipient[32];
    char text[256];
    int64_t sent_at_ms;
} expected_row;

typedef struct expected_set {
    expected_row *rows;
    long n, cap;
    long undecodable;
} expected_set;

static void collect_row(const rd_kafka_message_t *m, void *opaque) {
    expected_set *set = opaque;
    Sluice__V1__DialogsEvent *ev = sluice__v1__dialogs_event__unpack(NULL, m->len, m->payload);
    if (!ev || ev->event_case != SLUICE__V1__DIALOGS_EVENT__EVENT_MESSAGE_SENT) {
        set->undecodable++;
    } else if (set->n < set->cap) {
        expected_row *r = &set->rows[set->n++];
        const Sluice__V1__MessageSent *ms = ev->message_sent;
        snprintf(r->dialog, sizeof(r->dialog), "%s", ms->dialog_id);
        r->sequence = ms->sequence;
        snprintf(r->sender, sizeof(r->sender), "%s", ms->sender_id);
        snprintf(r->recipient, sizeof(r->recipient), "%s", ms->recipient_id);
        snprintf(r->text, sizeof(r->text), "%s", ms->text);
        r->sent_at_ms = ms->sent_at_ms;
    }
    if (ev)
        sluice__v1__dialogs_event__free_unpacked(ev, NULL);
}

static int cmp_rows(const void *a, const void *b) {
    const expected_row *x = a, *y = b;
    int c = strcmp(x->dialog, y->dialog);
    if (c)
        return c;
    return x->sequence < y->sequence ? -1 : x->sequence > y->sequence;
}

/* The messages table equals the MessageSent events of the topic: same count,
 * same keys, same content, no duplicates (the primary key). */
static void assert_table_equals_topic(scenario *sc, long expected_count) {
    expected_set set = {.cap = expected_count + 16};
    set.rows = calloc((size_t)set.cap, sizeof(*set.rows));
    assert_non_null(set.rows);
    long read = test_scan_topic(test_kafka_bootstrap(), sc->messages_topic, "read_committed",
                                collect_row, &set, 120000);
    assert_true(read >= expected_count);
    assert_int_equal(set.n, expected_count);
    qsort(set.rows, (size_t)set.n, sizeof(*set.rows), cmp_rows);
    PGresult *res = PQexec(sc->pg, "SELECT dialog_id, sequence, sender_id, recipient_id, text, "
                                   "(extract(epoch FROM sent_at) * 1000)::bigint FROM messages "
                                   "ORDER BY dialog_id COLLATE \"C\", sequence");
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    assert_int_equal(PQntuples(res), set.n);
    long mismatches = 0;
    for (long i = 0; i < set.n; i++) {
        const expected_row *r = &set.rows[i];
        int row = (int)i;
        if (strcmp(PQgetvalue(res, row, 0), r->dialog) != 0 ||
            strtoll(PQgetvalue(res, row, 1), NULL, 10) != r->sequence ||
            strcmp(PQgetvalue(res, row, 2), r->sender) != 0 ||
            strcmp(PQgetvalue(res, row, 3), r->recipient) != 0 ||
            strcmp(PQgetvalue(res, row, 4), r->text) != 0 ||
            strtoll(PQgetvalue(res, row, 5), NULL, 10) != r->sent_at_ms) {
            if (mismatches++ < 3)
                fprintf(stderr, "# row %ld: table (%s, %s) topic (%s, %" PRId64 ")\n", i,
                        PQgetvalue(res, row, 0), PQgetvalue(res, row, 1), r->dialog, r->sequence);
        }
    }
    PQclear(res);
    free(set.rows);
    assert_int_equal(mismatches, 0);
}

static long long messages_count(scenario *sc) {
    return test_pg_query_int(sc->pg, "SELECT count(*) FROM messages");
}

static bool wait_count(scenario *sc, long long want, int timeout_ms) {
    for (int64_t deadline = test_now_ms() + timeout_ms; test_now_ms() < deadline;) {
        if (messages_count(sc) == want)
            return true;
        usleep(100 * 1000);
    }
    return false;
}

/* ---- tests -------------------------------------------------------------- */

static void migrations_applied_twice_are_a_no_op(void **state) {
    (void)state;
    test_skip_unless(test_admin, TEST_NO_BROKER_OR_PG);
    scenario sc;
    scenario_init(&sc, "pgsink-migrate");
    int applied = -1;
    if (sl_pgsink_migrate(sc.dsn, &test_logger, &applied, errstr, sizeof(errstr)))
        fail_msg("migrate: %s", errstr);
    assert_true(applied >= 1);
    const char *snapshot_sql =
        "SELECT md5(string_agg(table_name || '.' || column_name || ':' || data_type, ',' "
        "ORDER BY table_name, column_name)) FROM information_schema.columns "
        "WHERE table_schema = 'public'";
    PGresult *res = PQexec(sc.pg, snapshot_sql);
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    char before[64];
    snprintf(before, sizeof(before), "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    long long versions = test_pg_query_int(sc.pg, "SELECT count(*) FROM sluice_schema_version");
    assert_int_equal(versions, applied);
    /* messages is hash-partitioned by dialog_id. */
    assert_int_equal(test_pg_query_int(sc.pg, "SELECT count(*) FROM pg_inherits "
                                              "WHERE inhparent = 'messages'::regclass"),
                     8);
    assert_int_equal(test_pg_query_int(sc.pg,
                                       "SELECT count(*) FROM pg_partitioned_table pt JOIN pg_class "
                                       "c ON c.oid = pt.partrelid WHERE c.relname = 'messages' "
                                       "AND pt.partstrat = 'h'"),
                     1);

    int again = -1;
    if (sl_pgsink_migrate(sc.dsn, &test_logger, &again, errstr, sizeof(errstr)))
        fail_msg("migrate again: %s", errstr);
    assert_int_equal(again, 0);
    res = PQexec(sc.pg, snapshot_sql);
    assert_string_equal(PQgetvalue(res, 0, 0), before);
    PQclear(res);
    assert_int_equal(test_pg_query_int(sc.pg, "SELECT count(*) FROM sluice_schema_version"),
                     versions);
    scenario_free(&sc);
}

static void users_events_fill_users_without_password_hash(void **state) {
    (void)state;
    test_skip_unless(test_admin, TEST_NO_BROKER_OR_PG);
    scenario sc;
    scenario_init(&sc, "pgsink-users");
    rd_kafka_t *p = test_producer(test_kafka_bootstrap(), NULL);
    for (int i = 0; i < 50; i++) {
        char id[32], email[64], first[32];
        snprintf(id, sizeof(id), "user-%02d", i);
        snprintf(email, sizeof(email), "user%02d@example.com", i);
        snprintf(first, sizeof(first), "Имя %d", i);
        Sluice__V1__Profile profile = SLUICE__V1__PROFILE__INIT;
        profile.first_name = first;
        profile.second_name = (char *)"Second";
        profile.birthdate = (char *)(i % 2 ? "1990-05-17" : "");
        profile.biography = (char *)"bio\twith tab";
        profile.city = (char *)"Москва";
        Sluice__V1__UserRegistered ur = SLUICE__V1__USER_REGISTERED__INIT;
        ur.user_id = id;
        ur.email = email;
        ur.profile = &profile;
        ur.registered_at_ms = 1700000000000LL + i;
        Sluice__V1__UsersEvent ev = SLUICE__V1__USERS_EVENT__INIT;
        ev.event_case = SLUICE__V1__USERS_EVENT__EVENT_USER_REGISTERED;
        ev.user_registered = &ur;
        uint8_t buf[1024];
        size_t len = sluice__v1__users_event__pack(&ev, buf);
        produce_value(p, sc.users_topic, email, buf, len);
        /* Events that make no row still move the offsets. */
        Sluice__V1__PasswordChanged pc = SLUICE__V1__PASSWORD_CHANGED__INIT;
        pc.user_id = id;
        Sluice__V1__UsersEvent ev2 = SLUICE__V1__USERS_EVENT__INIT;
        ev2.event_case = SLUICE__V1__USERS_EVENT__EVENT_PASSWORD_CHANGED;
        ev2.password_changed = &pc;
        len = sluice__v1__users_event__pack(&ev2, buf);
        produce_value(p, sc.users_topic, email, buf, len);
    }
    assert_int_equal(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(p);

    sink_init(&sc, &sc.sink, "users-sink", false, "5000");
    sink_start(&sc, &sc.sink);
    bool done = false;
    for (int64_t deadline = test_now_ms() + 60000; !done && test_now_ms() < deadline;) {
        done = test_pg_query_int(sc.pg, "SELECT count(*) FROM users") == 50 &&
               test_pg_query_int(sc.pg, "SELECT sum(next_offset) FROM sluice_sink_offsets") == 100;
        if (!done)
            usleep(100 * 1000);
    }
    if (!done)
        test_instance_dump_log(&sc.sink, 30);
    assert_true(done);
    assert_int_equal(test_pg_query_int(sc.pg,
                                       "SELECT count(*) FROM information_schema.columns WHERE "
                                       "table_name = 'users' AND column_name ILIKE '%pass%'"),
                     0);
    PGresult *res = PQexec(sc.pg, "SELECT email, first_name, birthdate, city, biography, "
                                  "(extract(epoch FROM created_at) * 1000)::bigint FROM users "
                                  "WHERE id = 'user-07'");
    assert_int_equal(PQntuples(res), 1);
    assert_string_equal(PQgetvalue(res, 0, 0), "user07@example.com");
    assert_string_equal(PQgetvalue(res, 0, 1), "Имя 7");
    assert_string_equal(PQgetvalue(res, 0, 2), "1990-05-17");
    assert_string_equal(PQgetvalue(res, 0, 3), "Москва");
    assert_string_equal(PQgetvalue(res, 0, 4), "bio\twith tab");
    assert_string_equal(PQgetvalue(res, 0, 5), "1700000000007");
    PQclear(res);
    assert_int_equal(test_pg_query_int(sc.pg, "SELECT count(*) FROM users WHERE birthdate IS NULL"),
                     25);
    assert_int_equal(test_instance_stop(&sc.sink, 20000), 0);
    scenario_free(&sc);
}

typedef struct dlq_seen {
    int n;
    char errors[8][600];
    char offsets[8][32];
} dlq_seen;

static void collect_dlq(const rd_kafka_message_t *m, void *opaque) {
    dlq_seen *seen = opaque;
    if (seen->n >= 8)
        return;
    rd_kafka_headers_t *headers = NULL;
    const void *v;
    size_t len;
    seen->errors[seen->n][0] = seen->offsets[seen->n][0] = '\0';
    if (rd_kafka_message_headers(m, &headers) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (rd_kafka_header_get_last(headers, "sluice.dlq.error", &v, &len) == 0)
            snprintf(seen->errors[seen->n], sizeof(seen->errors[0]), "%.*s", (int)len,
                     (const char *)v);
        if (rd_kafka_header_get_last(headers, "sluice.dlq.offset", &v, &len) == 0)
            snprintf(seen->offsets[seen->n], sizeof(seen->offsets[0]), "%.*s", (int)len,
                     (const char *)v);
    }
    seen->n++;
}

static bool any_error_contains(const dlq_seen *seen, const char *needle) {
    for (int i = 0; i < seen->n; i++)
        if (strstr(seen->errors[i], needle))
            return true;
    return false;
}

static void poison_rows_go_to_the_dlq_and_the_rest_of_the_batch_lands(void **state) {
    (void)state;
    test_skip_unless(test_admin, TEST_NO_BROKER_OR_PG);
    scenario sc;
    scenario_init(&sc, "pgsink-poison");
    /* One partition's worth of one transaction, so everything is one batch. */
    char txn[160];
    snprintf(txn, sizeof(txn), "%s-producer", sc.app_id);
    rd_kafka_t *p = test_producer(test_kafka_bootstrap(), txn);
    assert_null(rd_kafka_begin_transaction(p));
    for (int i = 1; i <= 40; i++)
        produce_message_sent(p, sc.messages_topic, "a:b", i, "good");
    produce_message_sent(p, sc.messages_topic, "a:b", 0, "sequence 0 violates the CHECK");
    produce_message_sent(p, sc.messages_topic, "a:b", 41, "bad utf-8 \xff\xfe here");
    /* A key repeated within the batch must not fail the batch. */
    produce_message_sent(p, sc.messages_topic, "a:b", 5, "good");
    /* A NUL byte inside a string: protobuf-c would cut the text short. */
    {
        Sluice__V1__MessageSent ms = SLUICE__V1__MESSAGE_SENT__INIT;
        ms.dialog_id = (char *)"a:b";
        ms.sequence = 42;
        ms.sender_id = (char *)"s";
        ms.recipient_id = (char *)"r";
        ms.text = (char *)"nul_HERE";
        ms.sent_at_ms = 1;
        Sluice__V1__DialogsEvent ev = SLUICE__V1__DIALOGS_EVENT__INIT;
        ev.event_case = SLUICE__V1__DIALOGS_EVENT__EVENT_MESSAGE_SENT;
        ev.message_sent = &ms;
        uint8_t buf[256];
        size_t len = sluice__v1__dialogs_event__pack(&ev, buf);
        uint8_t *nul = memmem(buf, len, "_HERE", 5);
        assert_non_null(nul);
        *nul = '\0';
        produce_value(p, sc.messages_topic, "a:b", buf, len);
    }
    static const char garbage[] = "\xff\xff\xff not protobuf";
    produce_value(p, sc.messages_topic, "a:b", garbage, sizeof(garbage) - 1);
    for (int i = 43; i <= 60; i++)
        produce_message_sent(p, sc.messages_topic, "a:b", i, "good");
    commit_txn(p);
    rd_kafka_destroy(p);

    sink_init(&sc, &sc.sink, "poison-sink", false, "5000");
    sink_start(&sc, &sc.sink);
    /* 40 + 18 good rows; 41 and 42 are dead letters. */
    bool landed = wait_count(&sc, 58, 60000);
    if (!landed)
        test_instance_dump_log(&sc.sink, 30);
    assert_true(landed);
    assert_int_equal(
        test_pg_query_int(sc.pg, "SELECT count(*) FROM messages WHERE sequence IN (41, 42)"), 0);
    dlq_seen seen = {0};
    for (int64_t deadline = test_now_ms() + 30000; test_now_ms() < deadline;) {
        memset(&seen, 0, sizeof(seen));
        test_scan_topic(test_kafka_bootstrap(), sc.dlq_topic, "read_committed", collect_dlq, &seen,
                        30000);
        if (seen.n >= 4)
            break;
        usleep(200 * 1000);
    }
    for (int i = 0; i < seen.n; i++)
        printf("# dlq @%s: %s\n", seen.offsets[i], seen.errors[i]);
    assert_int_equal(seen.n, 4);
    assert_true(any_error_contains(&seen, "check constraint"));
    assert_true(any_error_contains(&seen, "invalid byte sequence"));
    assert_true(any_error_contains(&seen, "NUL byte"));
    assert_true(any_error_contains(&seen, "not a valid DialogsEvent"));
    assert_int_equal(test_instance_stop(&sc.sink, 20000), 0);
    scenario_free(&sc);
}

/* A batch's messages go straight into the table by COPY BINARY; a key that
 * is already there makes the sink redo the batch through the staged
 * upsert. Either way: within a batch the last record of a key wins, across
 * batches the row already written stays (messages are immutable). */
static void a_key_repeated_in_a_later_batch_changes_nothing(void **state) {
    (void)state;
    test_skip_unless(test_admin, TEST_NO_BROKER_OR_PG);
    scenario sc;
    scenario_init(&sc, "pgsink-repeat");
    char txn[160];
    snprintf(txn, sizeof(txn), "%s-producer", sc.app_id);
    rd_kafka_t *p = test_producer(test_kafka_bootstrap(), txn);
    assert_null(rd_kafka_begin_transaction(p));
    for (int i = 1; i <= 10; i++)
        produce_message_sent(p, sc.messages_topic, "a:b", i, "first");
    produce_message_sent(p, sc.messages_topic, "a:b", 3, "last in its batch");
    commit_txn(p);

    sink_init(&sc, &sc.sink, "repeat-sink", false, "5000");
    sink_start(&sc, &sc.sink);
    bool landed = wait_count(&sc, 10, 60000);
    if (!landed)
        test_instance_dump_log(&sc.sink, 30);
    assert_true(landed);

    assert_null(rd_kafka_begin_transaction(p));
    produce_message_sent(p, sc.messages_topic, "a:b", 5, "replayed");
    produce_message_sent(p, sc.messages_topic, "a:b", 11, "new");
    commit_txn(p);
    landed = wait_count(&sc, 11, 60000);
    if (!landed)
        test_instance_dump_log(&sc.sink, 30);
    assert_true(landed);
    /* And the sink goes on after the fallback. */
    assert_null(rd_kafka_begin_transaction(p));
    produce_message_sent(p, sc.messages_topic, "a:b", 12, "new");
    commit_txn(p);
    rd_kafka_destroy(p);
    assert_true(wait_count(&sc, 12, 60000));

    assert_int_equal(
        test_pg_query_int(sc.pg, "SELECT count(*) FROM messages WHERE text = 'replayed'"), 0);
    assert_int_equal(test_pg_query_int(sc.pg,
                                       "SELECT count(*) FROM messages WHERE sequence = 3 AND "
                                       "text = 'last in its batch'"),
                     1);
    assert_int_equal(test_pg_query_int(sc.pg,
                                       "SELECT count(*) FROM messages WHERE sent_at = "
                                       "timestamptz 'epoch' + (1700000000000 + sequence * 1001) "
                                       "* interval '1 ms'"),
                     12);
    assert_int_equal(test_instance_stop(&sc.sink, 20000), 0);
    scenario_free(&sc);
}

static long records_from_env(void) {
    const char *s = getenv("SLUICE_TEST_PGSINK_RECORDS");
    long n = s ? strtol(s, NULL, 10) : 0;
    return n > 0 ? n : 100000;
}

static void messages_table_equals_topic_despite_kill9(void **state) {
    (void)state;
    test_skip_unless(test_admin, TEST_NO_BROKER_OR_PG);
    scenario sc;
    scenario_init(&sc, "pgsink-kill");
    long total = records_from_env();
    producer_job job = {.topic = sc.messages_topic, .first = 0, .count = total, .per_txn = 1000};
    snprintf(job.txn_id, sizeof(job.txn_id), "%s-producer", sc.app_id);
    sink_init(&sc, &sc.sink, "kill-sink", false, "2000");
    sink_start(&sc, &sc.sink);
    pthread_t producer;
    assert_int_equal(pthread_create(&producer, NULL, producer_thread, &job), 0);
    /* Five kills at random points of the load: when the table passes random
     * thresholds, plus a random delay so a kill can land inside a batch. */
    srand((unsigned)getpid());
    for (int k = 0; k < 5; k++) {
        long long threshold = (long long)(total * (k + 1) / 7) + rand() % (total / 20);
        int64_t deadline = test_now_ms() + 120000;
        while (messages_count(&sc) < threshold && test_now_ms() < deadline)
            usleep(20 * 1000);
        usleep((useconds_t)(rand() % 300) * 1000);
        long long at = messages_count(&sc);
        test_instance_kill9(&sc.sink);
        printf("# kill -9 %d at %lld rows\n", k + 1, at);
        sink_start(&sc, &sc.sink);
    }
    pthread_join(producer, NULL);
    bool complete = wait_count(&sc, total, 180000);
    if (!complete) {
        printf("# rows: %lld of %ld\n", messages_count(&sc), total);
        test_instance_dump_log(&sc.sink, 30);
    }
    assert_true(complete);
    assert_table_equals_topic(&sc, total);
    assert_int_equal(sc.sink.restarts, 5);
    assert_int_equal(test_instance_stop(&sc.sink, 20000), 0);
    scenario_free(&sc);
}

/* The harness's PostgreSQL: data dir and options, to stop and start it. */
static bool pg_ctl(const char *action) {
    const char *dir = getenv("SLUICE_TEST_HARNESS_DIR");
    const char *dsn = test_pg_dsn();
    const char *colon = strrchr(dsn, ':');
    int port = colon ? atoi(colon + 1) : 0;
    char cmd[2048];
    const char *as_pg = geteuid() == 0 ? "runuser -u postgres -- " : "";
    if (strcmp(action, "stop") == 0)
        snprintf(cmd, sizeof(cmd),
                 "%s/usr/lib/postgresql/15/bin/pg_ctl -D %s/pg/data -m fast -w -t 60 stop "
                 ">/dev/null",
                 as_pg, dir);
    else
        snprintf(cmd, sizeof(cmd),
                 "%s/usr/lib/postgresql/15/bin/pg_ctl -D %s/pg/data -l %s/pg/postgres.log -w "
                 "-t 60 -o \"-p %d -k %s/pg/sock -c listen_addresses=127.0.0.1 -c fsync=off "
                 "-c synchronous_commit=off -c full_page_writes=off\" start >/dev/null",
                 as_pg, dir, dir, port, dir);
    return system(cmd) == 0;
}

static void postgres_stopped_mid_load_then_started_is_exact(void **state) {
    (void)state;
    test_skip_unless(test_admin, TEST_NO_BROKER_OR_PG);
    const char *dir = getenv("SLUICE_TEST_HARNESS_DIR");
    char pgdata[512];
    snprintf(pgdata, sizeof(pgdata), "%s/pg/data/postmaster.pid", dir ? dir : "");
    struct stat st;
    if (!dir || stat(pgdata, &st) != 0) {
        fprintf(stderr, "# PostgreSQL not started by the harness: skipped\n");
        skip();
    }
    scenario sc;
    scenario_init(&sc, "pgsink-pgdown");
    long total = 30000;
    producer_job job = {.topic = sc.messages_topic, .first = 0, .count = total, .per_txn = 100};
    snprintf(job.txn_id, sizeof(job.txn_id), "%s-producer", sc.app_id);
    sink_init(&sc, &sc.sink, "pgdown-sink", false, "1000");
    sink_start(&sc, &sc.sink);
    pthread_t producer;
    assert_int_equal(pthread_create(&producer, NULL, producer_thread, &job), 0);
    int64_t deadline = test_now_ms() + 120000;
    while (messages_count(&sc) < total / 5 && test_now_ms() < deadline)
        usleep(20 * 1000);
    long long before = messages_count(&sc);
    assert_true(pg_ctl("stop"));
    printf("# postgres stopped at %lld rows\n", before);
    /* 30 s down, as the issue asks (longer than any backoff step). */
    bool saw_paused = false;
    for (int64_t until = test_now_ms() + 30000; test_now_ms() < until;) {
        char state_name[64];
        sink_state(&sc.sink, state_name, sizeof(state_name));
        saw_paused |= strcmp(state_name, "paused_for_postgres") == 0;
        usleep(200 * 1000);
    }
    assert_true(pg_ctl("start"));
    pthread_join(producer, NULL);
    bool complete = wait_count(&sc, total, 120000);
    if (!complete)
        test_instance_dump_log(&sc.sink, 30);
    assert_true(complete);
    assert_true(saw_paused);
    assert_table_equals_topic(&sc, total);
    assert_int_equal(test_instance_stop(&sc.sink, 20000), 0);
    scenario_free(&sc);
}

static void rebuild_swaps_new_tables_in_and_continues(void **state) {
    (void)state;
    test_skip_unless(test_admin, TEST_NO_BROKER_OR_PG);
    scenario sc;
    scenario_init(&sc, "pgsink-rebuild");
    producer_job job = {.topic = sc.messages_topic, .first = 0, .count = 5000, .per_txn = 500};
    snprintf(job.txn_id, sizeof(job.txn_id), "%s-producer", sc.app_id);
    producer_thread(&job);
    sink_init(&sc, &sc.sink, "rebuild-sink", false, "5000");
    sink_start(&sc, &sc.sink);
    assert_true(wait_count(&sc, 5000, 60000));
    assert_int_equal(test_instance_stop(&sc.sink, 20000), 0);
    /* Damage the copy: the rebuild restores it from the topic. */
    test_pg_exec(sc.pg, "DELETE FROM messages WHERE sequence % 3 = 0");
    test_pg_exec(sc.pg, "UPDATE messages SET text = 'tampered' WHERE sequence % 5 = 0");
    long long damaged = messages_count(&sc);
    assert_true(damaged < 5000);

    test_instance rebuild;
    sink_init(&sc, &rebuild, "rebuild-run", true, "5000");
    test_instance_start(&rebuild);
    /* Reads keep working on the old table until the swap. */
    bool swapped = false;
    for (int64_t deadline = test_now_ms() + 60000; !swapped && test_now_ms() < deadline;) {
        long long n = messages_count(&sc);
        assert_true(n == damaged || n == 5000);
        swapped = n == 5000;
        if (!swapped)
            usleep(50 * 1000);
    }
    if (!swapped)
        test_instance_dump_log(&rebuild, 30);
    assert_true(swapped);
    assert_true(test_instance_wait_ready(&rebuild, 30000));
    assert_int_equal(test_pg_query_int(sc.pg, "SELECT count(*) FROM pg_class WHERE relname LIKE "
                                              "'%rebuild%'"),
                     0);
    /* It continues as the group: new events land. */
    producer_job more = {.topic = sc.messages_topic, .first = 5000, .count = 1000, .per_txn = 500};
    snprintf(more.txn_id, sizeof(more.txn_id), "%s-producer", sc.app_id);
    producer_thread(&more);
    bool complete = wait_count(&sc, 6000, 60000);
    if (!complete)
        test_instance_dump_log(&rebuild, 30);
    assert_true(complete);
    assert_table_equals_topic(&sc, 6000);
    assert_int_equal(test_instance_stop(&rebuild, 20000), 0);
    test_instance_free(&rebuild);
    scenario_free(&sc);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(migrations_applied_twice_are_a_no_op),
        cmocka_unit_test(users_events_fill_users_without_password_hash),
        cmocka_unit_test(poison_rows_go_to_the_dlq_and_the_rest_of_the_batch_lands),
        cmocka_unit_test(a_key_repeated_in_a_later_batch_changes_nothing),
        cmocka_unit_test(messages_table_equals_topic_despite_kill9),
        cmocka_unit_test(postgres_stopped_mid_load_then_started_is_exact),
        cmocka_unit_test(rebuild_swaps_new_tables_in_and_continues),
    };
    const char *filter = getenv("SLUICE_TEST_FILTER");
    if (filter && *filter)
        cmocka_set_test_filter(filter);
    return cmocka_run_group_tests_name("pgsink", tests, test_broker_pg_setup, test_broker_teardown);
}
